"""Augmentation policy by epoch (Mosaic, MixUp, CopyBlend), multi-scale sizes, collate of negatives,
the epoch schedule derived from `epochs`, and `imgsz` driving every size."""
import copy
import random

import pytest
import torch
from PIL import Image

import data
from data.collate import BatchImageCollateFunction, generate_scales
from data.demo import make_demo
from data.mosaic import Mosaic
from data.pipeline import Compose
from data.transforms import make_boxes
from engine.config import derive_epochs, resolve


class TinyDataset:
    """What Compose and Mosaic read from a dataset: `epoch` and `load_item`."""

    def __init__(self, epoch=0):
        self.epoch = epoch

    def __len__(self):
        return 4

    def load_item(self, i):
        return Image.new("RGB", (48, 48)), {"boxes": make_boxes([[4, 4, 20, 20]], (48, 48)),
                                            "labels": torch.tensor([i]), "area": torch.tensor([256.0]),
                                            "iscrowd": torch.zeros(1, dtype=torch.int64)}


def test_mosaic_and_zoomout_follow_the_policy_epochs():
    compose = Compose(
        ops=[Mosaic(output_size=16, rotation_range=0, translation_range=(0, 0), scaling_range=(1, 1), use_cache=False),
             {"type": "RandomZoomOut", "fill": 0, "p": 1.0}],
        policy={"name": "stop_epoch", "epoch": [2, 4, 6], "ops": ["Mosaic", "RandomZoomOut"]}, mosaic_prob=1.0)
    sizes = {}
    for epoch in range(8):
        ds = TinyDataset(epoch)
        sizes[epoch] = compose(*ds.load_item(0), ds)[0].size[0]
    # before 2 and from 6: nothing; [2, 4): mosaic (2 x 16 px tiles) and no zoom-out; [4, 6): zoom-out only
    assert [sizes[e] for e in (0, 1, 6, 7)] == [48] * 4
    assert sizes[2] == sizes[3] == 32
    assert sizes[4] > 48 and sizes[5] > 48


def test_single_number_policy_only_stops_ops():
    compose = Compose(ops=[{"type": "Resize", "size": 16}], policy={"epoch": 3, "ops": ["Resize"]})
    ds = TinyDataset()
    assert [compose(*ds.load_item(0), TinyDataset(e))[0].size for e in (0, 2, 3)] == [(16, 16), (16, 16), (48, 48)]


def batch(n_boxes, size=32):
    """Items as the dataset gives them: constant images (value k/10), boxes cxcywh normalised."""
    items = []
    for k, n in enumerate(n_boxes):
        boxes = torch.tensor([[0.25 + 0.1 * j, 0.5, 0.3, 0.4] for j in range(n)]).reshape(-1, 4)
        items.append((torch.full((3, size, size), k / 10), {
            "boxes": boxes, "labels": torch.full((n,), k), "area": torch.full((n,), 0.12 * size * size),
            "iscrowd": torch.zeros(n, dtype=torch.int64), "size": torch.tensor([size, size])}))
    return items


def test_mixup_only_inside_its_epochs():
    collate = BatchImageCollateFunction(mixup_prob=1.0, mixup_epochs=[2, 4])
    for epoch, mixed in [(1, False), (2, True), (3, True), (4, False)]:
        collate.set_epoch(epoch)
        images, targets = collate(batch([1, 2, 0]))
        counts = [len(t["boxes"]) for t in targets]
        assert counts == ([1, 3, 2] if mixed else [1, 2, 0])
        if mixed:  # image 0 mixes with image 2 (the batch rolls by one)
            beta = (images[0, 0, 0, 0].item() - 0.2) / (0.0 - 0.2)
            assert 0.45 <= beta <= 0.55
            assert targets[0]["labels"].tolist() == [0]
            assert targets[1]["labels"].tolist() == [1, 1, 0]
        else:
            assert torch.equal(images[1], torch.full((3, 32, 32), 0.1))


def test_copyblend_only_inside_its_epochs_and_pastes_the_object():
    collate = BatchImageCollateFunction(copyblend_prob=1.0, copyblend_epochs=[1, 3], copyblend_type="copy",
                                        num_objects=1, area_threshold=0)
    items = batch([1, 0, 0])
    items[0][0][:, 8:24, 3:13] = 0.9  # the object of image 0: a 10x16 px patch at its box
    items[0][1]["boxes"] = torch.tensor([[8 / 32, 0.5, 10 / 32, 0.5]])
    for epoch, on in [(0, False), (1, True), (2, True), (3, False)]:
        collate.set_epoch(epoch)
        random.seed(epoch)
        images, targets = collate(items)
        assert [len(t["boxes"]) for t in targets] == ([2, 1, 1] if on else [1, 0, 0])
        if on:
            cx, cy, w, h = (targets[1]["boxes"][0] * 32).tolist()
            assert (w, h) == (10, 16) and targets[1]["labels"].tolist() == [0]
            patch = images[1, :, int(cy - h / 2):int(cy + h / 2), int(cx - w / 2):int(cx + w / 2)]
            assert torch.allclose(patch, torch.tensor(0.9))


def test_multiscale_sizes_follow_the_configured_list():
    # official generate_scales(640, 3), written out by hand
    assert generate_scales(640, 3) == [480, 512, 544, 576, 608, 640, 640, 640, 800, 768, 736, 704, 672]
    collate = BatchImageCollateFunction(base_size=64, base_size_repeat=2, stop_epoch=5)
    assert collate.scales == [32, 64, 64, 64]
    random.seed(0)
    seen = set()
    for _ in range(40):
        images, targets = collate(batch([1, 0]))
        seen.add(images.shape[-1])
        assert images.shape[-2] == images.shape[-1] and targets[0]["size"].tolist() == [images.shape[-1]] * 2
    assert seen == {32, 64}
    collate.set_epoch(5)
    assert collate(batch([1, 0]))[0].shape[-1] == 32  # the input size once multi-scale stops
    assert BatchImageCollateFunction(base_size_repeat=None).scales is None
    assert generate_scales(32, 1) == [32, 32]  # sizes below 32 are left out


def test_negatives_pass_through_collate_with_every_augmentation():
    collate = BatchImageCollateFunction(base_size=64, base_size_repeat=1, mixup_prob=0.5, mixup_epochs=[0, 9],
                                        copyblend_prob=1.0, copyblend_epochs=[0, 9])
    for seed in range(6):
        random.seed(seed)
        images, targets = collate(batch([0, 0, 0]))
        assert images.shape[:2] == (3, 3)
        for t in targets:
            assert t["boxes"].shape == (0, 4) and t["labels"].dtype == torch.int64 and len(t["labels"]) == 0


def test_collate_pads_different_sizes_and_rescales_boxes():
    a, b = batch([1], size=32)[0], batch([1], size=16)[0]
    images, targets = BatchImageCollateFunction()([a, b])
    assert images.shape == (2, 3, 32, 32) and torch.equal(images[1, :, 16:, :], torch.zeros(3, 16, 32))
    assert torch.allclose(targets[1]["boxes"], b[1]["boxes"] / 2) and targets[1]["size"].tolist() == [32, 32]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo(root, train=12, val=4, imgsz=64, seed=3)
    return root


def loader_cfg(root, **extra):
    return {"dataset": {"type": "coco", "img_folder": str(root / "train"),
                        "ann_file": str(root / "train/_annotations.coco.json"),
                        "transforms": {"ops": [{"type": "RandomHorizontalFlip"}, {"type": "Resize", "size": [48, 48]},
                                               {"type": "ConvertPILImage"}, {"type": "ConvertBoxes"}],
                                       "policy": {"name": "stop_epoch", "epoch": 1, "ops": ["Resize"]}}},
            "collate_fn": {"type": "BatchImageCollateFunction", "mixup_prob": 1.0, "mixup_epochs": [5, 6]},
            "batch_size": 4, "shuffle": False, "drop_last": False, **extra}


def test_loader_batches_follow_the_interface(demo):
    loader = data.build_dataloader(loader_cfg(demo), "train", verbose=False)
    negatives = 0
    for images, targets in loader:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 48, 48)
        for t in targets:
            assert t["boxes"].shape[1] == 4 and ((t["boxes"] >= 0) & (t["boxes"] <= 1)).all()
            assert t["labels"].dtype == torch.int64 and t["image_id"].dtype == torch.int64
            assert t["orig_size"].tolist() == [64, 64] and t["size"].tolist() == [48, 48]
            negatives += len(t["boxes"]) == 0
    assert negatives >= 1


def test_persistent_workers_see_set_epoch(demo):
    loader = data.build_dataloader(loader_cfg(demo, num_workers=1, persistent_workers=True), "train", verbose=False)
    own = [len(loader.dataset[i][1]["boxes"]) for i in range(4)]
    seen = []
    for epoch in (0, 1, 5):
        data.set_epoch(loader, epoch)
        images, targets = next(iter(loader))
        seen.append((images.shape[-1], [len(t["boxes"]) for t in targets]))
    # epoch 1 stops Resize (the 64 px original comes through); epoch 5 turns MixUp on, in the worker:
    # each image then also carries the boxes of the one before it in the batch
    assert seen == [(48, own), (64, own), (64, [own[i] + own[i - 1] for i in range(4)])]


def test_derive_epochs_follows_the_tutorial():
    # seeds/000: 50 epochs -> epoches 62, flat 29, no_aug 12, policy [4, 29, 50], matcher ~90%
    assert derive_epochs(62) == {"no_aug_epoch": 12, "flat_epoch": 29, "policy_epoch": [4, 29, 50],
                                 "mixup_epochs": [4, 29], "copyblend_epochs": [4, 50], "stop_epoch": 50,
                                 "matcher_change_epoch": 45}
    # its section 6.3: 100 epochs -> epoches 112, flat 54, policy [4, 54, 100], matcher 90
    d = derive_epochs(112)
    assert (d["flat_epoch"], d["policy_epoch"], d["matcher_change_epoch"]) == (54, [4, 54, 100], 90)
    # official DEIM-N: 160 -> [4, 78, 148]
    assert derive_epochs(160)["policy_epoch"] == [4, 78, 148]
    short = derive_epochs(10)
    assert short["no_aug_epoch"] == 2 and short["policy_epoch"] == [2, 6, 8]


TO_TENSOR = {"type": "ConvertPILImage"}
TO_TARGETS = {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}


def loaders(train_ops=(), val_ops=(), **train):
    """Dataloader sections over a dataset that need not exist (resolve only checks the config); the
    ops the trainer requires are appended."""
    def section(ops, **extra):
        return {"dataset": {"type": "coco", "img_folder": "x", "ann_file": "x.json",
                            "transforms": {"ops": list(ops), **extra.pop("transforms", {})}}, **extra}
    return {"train_dataloader": section([*train_ops, TO_TENSOR, TO_TARGETS], **train),
            "val_dataloader": section([*val_ops, TO_TENSOR])}


def test_resolve_fills_only_unset_epoch_values_and_leaves_its_input_alone():
    cfg = {"epochs": 62, "flat_epoch": None,
           **loaders(transforms={"policy": {"epoch": None}}, collate_fn={"mixup_epochs": [1, 2], "stop_epoch": None})}
    original = copy.deepcopy(cfg)
    cfg = resolve(cfg, training=False)
    assert original == {"epochs": 62, "flat_epoch": None, **loaders(transforms={"policy": {"epoch": None}}, collate_fn={
        "mixup_epochs": [1, 2], "stop_epoch": None})}
    assert cfg["flat_epoch"] == 29 and cfg["no_aug_epoch"] == 12
    assert cfg["train_dataloader"]["dataset"]["transforms"]["policy"]["epoch"] == [4, 29, 50]
    assert cfg["train_dataloader"]["collate_fn"]["mixup_epochs"] == [1, 2]  # explicit value kept
    assert cfg["train_dataloader"]["collate_fn"]["stop_epoch"] == 50


def test_imgsz_drives_every_size():
    cfg = {"imgsz": 320, **loaders([{"type": "Mosaic", "output_size": 320}, {"type": "Resize", "size": [640, 640]}],
                                   [{"type": "Resize", "size": [640, 640]}],
                                   collate_fn={"base_size": 640, "base_size_repeat": 3}, ram_cache=True)}
    cfg = resolve(cfg, training=False)
    train_ops = cfg["train_dataloader"]["dataset"]["transforms"]["ops"]
    assert train_ops[0]["output_size"] == 160 and train_ops[1]["size"] == [320, 320]
    assert cfg["val_dataloader"]["dataset"]["transforms"]["ops"][0]["size"] == [320, 320]
    assert cfg["train_dataloader"]["collate_fn"]["base_size"] == 320 and cfg["train_dataloader"]["cache_imgsz"] == 320


def test_an_explicit_cache_size_is_kept_and_a_non_positive_one_refused():
    from core.errors import ConfigError

    cfg = resolve({"imgsz": 320, **loaders([], [], ram_cache=True, cache_imgsz=640)}, training=False)
    assert cfg["train_dataloader"]["cache_imgsz"] == 640  # not replaced by the size imgsz derives
    with pytest.raises(ConfigError, match="cache_imgsz"):
        resolve({"imgsz": 320, **loaders([], [], ram_cache=True, cache_imgsz=0)}, training=False)


def test_malformed_policy_epochs_are_config_errors():
    from core.errors import ConfigError

    for epochs in (None, [1, 2]):
        with pytest.raises(ConfigError, match="policy.epoch"):
            Compose([], {"name": "stop_epoch", "epoch": epochs})


@pytest.mark.parametrize("train_ops, val_ops, where, message", [
    ([TO_TENSOR], [TO_TENSOR], "train_dataloader.dataset.transforms.ops", "no ConvertBoxes"),
    ([TO_TARGETS], [TO_TENSOR], "train_dataloader.dataset.transforms.ops", "no ConvertPILImage"),
    ([TO_TENSOR, TO_TARGETS], [{"type": "Resize", "size": [64, 64]}], "val_dataloader.dataset.transforms.ops",
     "no ConvertPILImage"),
    ([TO_TENSOR, dict(TO_TARGETS, fmt="xyxy")], [TO_TENSOR], "train_dataloader.dataset.transforms.ops[1]",
     "normalized cxcywh"),
    ([TO_TENSOR, dict(TO_TARGETS, normalize=False)], [TO_TENSOR], "train_dataloader.dataset.transforms.ops[1]",
     "normalized cxcywh"),
    ([TO_TENSOR, TO_TARGETS, {"type": "RandomHorizontalFlip"}], [TO_TENSOR], "train_dataloader.dataset.transforms.ops",
     "RandomHorizontalFlip after ConvertBoxes"),
])
def test_a_pipeline_that_would_train_on_wrong_targets_is_refused(train_ops, val_ops, where, message):
    """Without ConvertBoxes the criterion would read pixel xyxy boxes as normalized cxcywh and train
    without an error; without ConvertPILImage the collate would fail on PIL images mid-run."""
    from core.errors import ConfigError

    cfg = {"train_dataloader": {"dataset": {"type": "coco", "img_folder": "x", "ann_file": "x.json",
                                            "transforms": {"ops": train_ops}}},
           "val_dataloader": {"dataset": {"type": "coco", "img_folder": "x", "ann_file": "x.json",
                                          "transforms": {"ops": val_ops}}}}
    with pytest.raises(ConfigError, match=message) as err:
        resolve(cfg, training=False)
    assert err.value.where == where


def test_the_conversions_cannot_be_policy_ops_or_missing_altogether():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="stop with them") as err:
        resolve(loaders(transforms={"policy": {"epoch": 3, "ops": ["ConvertBoxes"]}}), training=False)
    assert err.value.where == "train_dataloader.dataset.transforms.policy.ops"
    cfg = loaders()
    del cfg["val_dataloader"]["dataset"]["transforms"]
    with pytest.raises(ConfigError, match="no transforms"):
        resolve(cfg, training=False)
