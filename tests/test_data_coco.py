"""COCO loading: category mapping, negatives, crowd boxes, validation report, RAM cache."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from data import DataError, build_dataset, check_num_classes
from data.coco import COCO80_NAMES, CocoDetection
from data.pipeline import Compose
from data.validate import validate_coco

TO_TENSOR = {"ops": [{"type": "ConvertPILImage"}, {"type": "ConvertBoxes", "fmt": "cxcywh", "normalize": True}]}


def write_coco(folder, images, annotations, categories, sizes=None):
    """Images are solid grey JPEGs of the sizes in `images` unless `sizes` overrides the file size."""
    folder.mkdir(parents=True, exist_ok=True)
    for im in images:
        w, h = (sizes or {}).get(im["id"], (im.get("width", 40), im.get("height", 30)))
        Image.new("RGB", (w, h), (90, 90, 90)).save(folder / im["file_name"])
    path = folder / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def ann(i, image_id, cat, bbox, **extra):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0, **extra}


@pytest.fixture
def sparse(tmp_path):
    images = [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30},
              {"id": 9, "file_name": "b.jpg", "width": 40, "height": 30},
              {"id": 11, "file_name": "neg.jpg", "width": 40, "height": 30}]
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]
    anns = [ann(1, 7, 90, [1, 2, 10, 8]), ann(2, 7, 3, [20, 5, 5, 5]), ann(3, 9, 17, [0, 0, 40, 30]),
            ann(4, 9, 3, [5, 5, 6, 6], iscrowd=1)]
    return write_coco(tmp_path, images, anns, cats), tmp_path


def test_sparse_ids_map_to_contiguous_labels_and_back(sparse):
    ann_file, folder = sparse
    ds = CocoDetection(folder, ann_file, transforms=Compose(**TO_TENSOR), verbose=False)
    assert ds.category_ids == [3, 17, 90] and ds.names == ["car", "cat", "toothbrush"] and ds.num_classes == 3
    _, t = ds[0]  # image 7: toothbrush then car
    assert t["labels"].tolist() == [2, 0]
    assert [ds.category_ids[i] for i in t["labels"]] == [90, 3]
    assert torch.allclose(t["boxes"][0], torch.tensor([6 / 40, 6 / 30, 10 / 40, 8 / 30]))
    assert t["image_id"].item() == 7 and t["orig_size"].tolist() == [40, 30] and t["size"].tolist() == [40, 30]
    # the evaluator's COCO keeps the original ids
    assert sorted(ds.coco.getCatIds()) == [3, 17, 90]


def test_crowd_boxes_leave_training_targets_but_stay_for_evaluation(sparse):
    ds = CocoDetection(sparse[1], sparse[0], transforms=Compose(**TO_TENSOR), verbose=False)
    _, t = ds[1]
    assert t["labels"].tolist() == [1]
    assert len(ds.coco.getAnnIds(imgIds=[9])) == 2


def test_negative_image_has_empty_targets(sparse):
    ds = CocoDetection(sparse[1], sparse[0], transforms=Compose(**TO_TENSOR), verbose=False)
    image, t = ds[2]
    assert image.shape == (3, 30, 40) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_string_category_ids_keep_file_order(tmp_path):
    cats = [{"id": "dog", "name": "dog"}, {"id": "ant", "name": "ant"}]
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
                      [ann(1, 1, "ant", [1, 1, 5, 5])], cats)
    ds = CocoDetection(tmp_path, path, transforms=Compose(**TO_TENSOR), verbose=False)
    assert ds.category_ids == ["dog", "ant"] and ds[0][1]["labels"].tolist() == [1]


def test_num_classes_mismatch_is_a_clear_error(sparse):
    ds = CocoDetection(sparse[1], sparse[0], verbose=False)
    assert check_num_classes(ds, None) == 3 and check_num_classes(ds, 3) == 3
    with pytest.raises(DataError, match="num_classes is 80 but the dataset has 3 categories"):
        check_num_classes(ds, 80)
    with pytest.raises(DataError, match="num_classes"):
        CocoDetection(sparse[1], sparse[0], num_classes=4, verbose=False)


def test_coco80_remap_uses_official_label_order(tmp_path):
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
                      [ann(1, 1, 90, [1, 1, 5, 5]), ann(2, 1, 13, [1, 1, 5, 5])],
                      [{"id": 13, "name": "stop sign"}, {"id": 90, "name": "toothbrush"}])
    ds = CocoDetection(tmp_path, path, remap_mscoco_category=True, transforms=Compose(**TO_TENSOR), verbose=False)
    # official table: id 13 is label 11 (ids 12 missing), id 90 is the last label 79
    assert ds.num_classes == 80 and ds[0][1]["labels"].tolist() == [79, 11]
    assert ds.category_ids[11] == 13 and len(COCO80_NAMES) == 80
    bad = write_coco(tmp_path / "b", [{"id": 1, "file_name": "a.jpg"}], [], [{"id": 12, "name": "x"}])
    with pytest.raises(DataError, match="not COCO-80"):
        CocoDetection(tmp_path / "b", bad, remap_mscoco_category=True, verbose=False)


def test_every_validation_problem_is_reported_with_its_ids(tmp_path):
    images = [{"id": 1, "file_name": "ok.jpg", "width": 40, "height": 30},
              {"id": 2, "file_name": "gone.jpg", "width": 40, "height": 30},
              {"id": 3, "file_name": "broken.jpg", "width": 40, "height": 30},
              {"id": 1, "file_name": "dup.jpg", "width": 40, "height": 30},
              {"id": 4, "file_name": "nosize.jpg"},
              {"id": 5, "file_name": "rotated.jpg", "width": 40, "height": 30},
              {"id": 6, "file_name": "ok.jpg", "width": 40, "height": 30},   # a merge of two exports
              {"id": 7, "file_name": "resized.jpg", "width": 40, "height": 30}]   # halved after labelling
    anns = [ann(10, 1, 1, [30, 20, 20, 20]),            # outside: clamped to 10x10
            ann(11, 1, 1, [5, 5, 0, 4]),                 # zero width
            ann(12, 1, 1, [5, 5, -3, 4]),                # negative width
            ann(13, 1, 1, [float("nan"), 1, 2, 2]),      # NaN
            ann(14, 99, 1, [1, 1, 2, 2]),                # unknown image
            ann(15, 1, 7, [1, 1, 2, 2]),                 # unknown category
            ann(15, 1, 1, [1, 1, 2, 2]),                 # duplicate annotation id
            ann(16, 1, 1, [50, 40, 5, 5])]               # entirely outside: dropped
    path = write_coco(tmp_path, [im for im in images if im["file_name"] not in ("gone.jpg", "dup.jpg")],
                      anns, [{"id": 1, "name": "thing"}, {"id": 2, "name": "thing"}], sizes={4: (64, 48), 5: (30, 40), 7: (20, 15)})
    raw = json.loads(path.read_text())
    raw["images"] = images
    path.write_text(json.dumps(raw))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    report = validate_coco(path, tmp_path)
    found = {(p.kind, p.image_id, p.file_name, p.ann_id) for p in report.problems}
    assert ("box_clamped", 1, "ok.jpg", 10) in found
    assert {("box_degenerate", 1, "ok.jpg", 11), ("box_degenerate", 1, "ok.jpg", 12),
            ("box_degenerate", 1, "ok.jpg", 16)} <= found
    assert ("box_nan", 1, "ok.jpg", 13) in found
    assert ("unknown_image", 99, None, 14) in found
    assert ("unknown_category", 1, "ok.jpg", 15) in found
    assert ("duplicate_annotation_id", 1, "ok.jpg", 15) in found
    assert ("image_missing", 2, "gone.jpg", None) in found
    assert ("image_unreadable", 3, "broken.jpg", None) in found
    assert ("duplicate_image_id", 1, "dup.jpg", None) in found
    assert ("size_filled", 4, "nosize.jpg", None) in found
    assert ("size_mismatch", 5, "rotated.jpg", None) in found
    assert ("duplicate_file_name", 6, "ok.jpg", None) in found
    assert ("size_differs", 7, "resized.jpg", None) in found
    assert [p.detail for p in report.problems if p.kind == "duplicate_category_name"] == [
        "'thing': category ids 1 and 2"]
    assert {p.kind for p in report.errors} == {"unknown_category", "duplicate_annotation_id", "image_missing",
                                                "image_unreadable", "duplicate_image_id", "duplicate_file_name",
                                                "size_differs"}
    kept = {a["id"]: a for a in report.dataset["annotations"]}
    assert set(kept) == {10}  # 15 (second) follows the first 15, which had an unknown category
    assert kept[10]["bbox"] == [30.0, 20.0, 10.0, 10.0]
    assert next(im for im in report.dataset["images"] if im["id"] == 4)["width"] == 64
    with pytest.raises(DataError) as err:
        CocoDetection(tmp_path, path, verbose=False)
    message = str(err.value)
    assert "image_missing" in message and "gone.jpg" in message and "ann_id=15" in message


def test_warnings_alone_do_not_stop_training(tmp_path):
    path = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
                      [ann(1, 1, 1, [-5, 0, 20, 10]), ann(2, 1, 1, [3, 3, 0, 0])], [{"id": 1, "name": "x"}])
    ds = CocoDetection(tmp_path, path, transforms=Compose(**TO_TENSOR), verbose=False)
    assert ds.report.counts == {"box_clamped": 1, "box_degenerate": 1}
    assert torch.allclose(ds[0][1]["boxes"], torch.tensor([[7.5 / 40, 5 / 30, 15 / 40, 10 / 30]]))


def test_ram_cache_gives_the_same_targets(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 60}],
        "annotations": [ann(1, 1, 1, [10, 6, 40, 30])], "categories": [{"id": 1, "name": "x"}]}))
    cfg = {"dataset": {"type": "coco", "img_folder": str(tmp_path), "ann_file": str(tmp_path / "ann.json"),
                       "transforms": {"ops": [{"type": "Resize", "size": 32}, *TO_TENSOR["ops"]]}}}
    plain = build_dataset(cfg, verbose=False)
    cached = build_dataset({**cfg, "ram_cache": True, "cache_imgsz": 50}, verbose=False)
    assert cached.cache.arrays[0].shape == (30, 50, 3) and cached.cache.estimate_bytes() == 30 * 50 * 3
    (a, ta), (b, tb) = plain[0], cached[0]
    assert torch.allclose(ta["boxes"], tb["boxes"]) and ta["orig_size"].tolist() == tb["orig_size"].tolist() == [100, 60]
    assert a.shape == b.shape == (3, 32, 32)
    # at or above the images' size the cache keeps every pixel: the same training samples, exactly
    full = build_dataset({**cfg, "ram_cache": True, "cache_imgsz": 100}, verbose=False)
    (c, tc) = full[0]
    assert torch.equal(a, c) and torch.equal(ta["boxes"], tc["boxes"]) and torch.equal(ta["labels"], tc["labels"])
