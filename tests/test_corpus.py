"""Broken-input corpus (issue #12): every case runs a command-line entry point end to end on one
broken file (a graph, a dataset, a checkpoint) and checks its exit code, that the message names the
file and the row/id/field and says how to fix it, and that no traceback is shown.

Graph files ship in tests/corpus/graphs/; datasets and checkpoints are written here from the demo
generator. The CLIs run in-process (`main(argv)` under `cli_main`, the entry point's own wrapper)
so the corpus stays fast; a few subprocess runs check the real processes and `--debug`.
Inputs that must still train (1-based or sparse ids, grayscale images...) are loaded and their
targets compared with hand values. The README's Troubleshooting section is rendered from CASES
(tests/corpus/make_troubleshooting.py) and a test keeps the two equal.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import train
from analyze import info
from data import build_dataset
from core.checkpoint_io import read_checkpoint
from engine import checkpoint
from models import build_model
from core.errors import cli_main
from tests.engine_helpers import REPO, TINY_GRAPH, drop_category, make_data, subprocess_env, tiny_config, write_config

pytestmark = pytest.mark.corpus
CORPUS = REPO / "tests" / "corpus"
ANN = "_annotations.coco.json"


@dataclass(frozen=True)
class Case:
    """One broken input: what the user sees (a fragment of the message) and what to do (the fix line)."""
    id: str
    group: str                 # graph | dataset | checkpoint
    see: str
    do: str
    names: tuple = ()          # more fragments the message must hold (row, ids, field)
    stops: bool = True         # False: the input trains (repaired with a warning, or accepted as it is)
    warns: bool = False        # with stops=False: `see` is a warning the command prints


GRAPH_HINT = "fix the YAML at that line"
CASES = [
    # ------------------------------------------------------------------ graphs (python -m analyze.info FILE)
    Case("unknown_block", "graph", "unknown module 'FooBarNet'", "run `python -m blocks list`", ("row 2", "FooBarNet")),
    Case("typo_block", "graph", "unknown module 'GhostConvv'", "did you mean GhostConv", ("row 2",)),
    Case("bad_from", "graph", "`from` -5 is before the first row", "use -1 for the previous row", ("row 2", "rows 0..1")),
    Case("forward_reference", "graph", "`from` 3 points forward", "use -1 for the previous row", ("row 2",)),
    Case("channel_mismatch", "graph", "channel mismatch: Add needs inputs with equal channels, got [16, 8]",
         "project the inputs to one width first", ("row 2", "inputs from rows [1, 0]")),
    Case("wrong_arg_count", "graph", "wrong arguments for Conv: too many positional arguments",
         "Conv takes (c2, k, s, p, g, d, act, bias)", ("row 2",)),
    Case("wrong_arg_type", "graph", "args must be a list, a dict or [list, dict], got int",
         "`[16, 3, 2]` (positional) or `{c2: 16, k: 3}` (keyword)", ("row 2",)),
    Case("bad_scale", "graph", "scale 'n' must be [depth, width, max_channels], got [0.33, 0.25]",
         "three numbers, e.g. `n: [0.33, 0.25, 1024]`", ("scales",)),
    Case("empty_section", "graph", "section 'encoder' must be a non-empty list of rows",
         "write each row as `- [from, repeats, module, args]`"),
    Case("decoder_not_last", "graph", "decoder DFINEDecoder must be the last row",
         "move the DETR decoder to the end of the `decoder:` section", ("row 3",)),
    Case("nested_unknown", "graph", "nested module: unknown module 'PoolMixr'", "run `python -m blocks list`",
         ("row 2", "MetaFormerBlock")),
    Case("yaml_syntax", "graph", "YAML syntax error: expected ',' or ']'", GRAPH_HINT, ("line 7",)),
    Case("duplicate_keys", "graph", "YAML syntax error: duplicate key 'nc' (first at line 1)",
         "keep one of the two", ("line 5",)),
    Case("non_list_row", "graph", "a row must be [from, repeats, module, args], got {'from': -1",
         "write 4 fields, e.g. `- [-1, 1, Conv, [64, 3, 2]]`", ("row 2",)),
    Case("negative_repeats", "graph", "repeats must be a positive integer, got -3",
         "1 for one block, n for n stacked copies", ("row 2",)),
    Case("huge_repeats", "graph", "repeats 100000000 exceeds the limit of 64",
         "deep stacks belong in a block's own depth argument", ("row 2",)),
    Case("nc_zero", "graph", "nc must be a positive integer, got 0", "set `nc:` to the number of classes", (": nc",)),
    Case("string_number", "graph", "Conv.c2 must be an integer, got 'sixteen'",
         "Conv takes (c1, c2, k, s, p, g, d, act, bias)", ("row 2",)),
    Case("nn_missing", "graph", "torch.nn has no module 'Conv2dd'", "check the spelling against torch.nn", ("row 2",)),
    Case("include_cycle", "graph", "__include__ cycle:", "remove one of the includes",
         ("include_cycle_a.yml -> ", "include_cycle_b.yml -> ")),
    # ------------------------------------------------------------------ datasets (python train.py -c CONFIG)
    Case("category_out_of_range", "dataset", "unknown_category x1: annotation of a category missing from `categories`", "fix the annotation file or the image folder",
         ("image_id=1", "ann_id=1", "category_id=7")),
    Case("one_based_ids", "dataset", "category ids 1..3 train as labels 0..2", "nothing: ids map to labels and back",
         stops=False),
    Case("sparse_ids", "dataset", "category ids 5, 17, 90 train as labels 0, 1, 2", "nothing: ids map to labels and back",
         stops=False),
    Case("string_ids", "dataset", "category ids 'circle', 'square', 'triangle' keep the file's order",
         "nothing: ids map to labels and back", stops=False),
    Case("box_outside_image", "dataset", "box_clamped x1: box reaches outside the image (clamped)", "nothing: the box is clamped to the image",
         ("image_id=1", "ann_id=1", "bbox=[60.0, 60.0, 50.0, 50.0] in 96x96"), stops=False, warns=True),
    Case("zero_area_box", "dataset", "box_degenerate x1: box with zero or negative width/height (dropped)", "nothing: the box is dropped; fix it in the annotation file",
         ("image_id=1", "ann_id=1", "bbox=[10.0, 10.0, 0.0, 8.0]"), stops=False, warns=True),
    Case("nan_box", "dataset", "box_nan x1: box with NaN/inf coordinates (dropped)", "nothing: the box is dropped; fix it in the annotation file",
         ("image_id=1", "ann_id=1", "bbox=[nan,"), stops=False, warns=True),
    Case("missing_image", "dataset", "image_missing x1: image file not found", "fix the annotation file or the image folder",
         ("image_id=1", "file=000001.jpg")),
    Case("corrupt_jpeg", "dataset", "image cannot be decoded", "re-export or remove this image", ("000001.jpg",)),
    Case("grayscale_rgba_16bit", "dataset", "greyscale, RGBA and 16-bit images load as 8-bit RGB",
         "nothing: they are converted", stops=False),
    Case("exif_rotated", "dataset", "EXIF-rotated images load upright, as annotation tools show them",
         "nothing: the orientation is applied", stops=False),
    Case("duplicate_image_ids", "dataset", "duplicate_image_id x1: two images share an id", "fix the annotation file or the image folder",
         ("image_id=1", "file=000002.jpg", "also used by 000001.jpg")),
    Case("annotation_of_missing_image", "dataset",
         "unknown_image x1: annotation of an image missing from `images` (dropped)", "nothing: the annotation is dropped",
         ("image_id=999", "ann_id=1"), stops=False, warns=True),
    Case("empty_annotations", "dataset", "every image is a negative", "nothing: negatives train", stops=False),
    Case("yolo_six_columns", "dataset", "expected 5 columns `class cx cy w h`, found 6",
         "convert segmentation polygons to boxes first", ("labels/000001.txt:2",)),
    # ------------------------------------------------------------------ checkpoints (train.py -r / -t)
    Case("truncated_checkpoint", "checkpoint", "cannot read checkpoint", "the file is torn or not a torch checkpoint",
         ("truncated.pth",)),
    Case("other_graph_checkpoint", "checkpoint", "does not fit this model",
         "-r resumes the same graph and class count; use -t to fine-tune", ("other_graph.pth",)),
    Case("other_class_count", "checkpoint", "skipped 7 tensors with a different shape (kept freshly initialised)",
         "nothing: -t keeps every tensor that fits", ("score_head",), stops=False, warns=True),
    Case("official_layout", "checkpoint", "converted from the official layout", "nothing: -t converts it",
         ("loaded ",), stops=False, warns=True),
    Case("pickle_runs_code", "checkpoint", "refused to unpickle Python objects other than tensors",
         "only if you trust where the file came from: `python -m engine.checkpoint SRC OUT --trust` rewrites it "
         "once as plain tensors", ("evil.pth",)),
]
BY_ID = {case.id: case for case in CASES}


def run_cli(main, argv) -> tuple[int, str]:
    """Run an entry point as its `__main__` does (cli_main); return (exit code, stdout + stderr).

    Any exception other than SystemExit escapes: a user would have seen it as a traceback."""
    out, saved = io.StringIO(), sys.argv
    sys.argv = ["prog", *map(str, argv)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                cli_main(lambda: main([str(a) for a in argv]))
                code = 0
            except SystemExit as done:
                code = done.code
    finally:
        sys.argv = saved
    return code, out.getvalue()


def check_message(case: Case, code: int, text: str, path: Path | None = None) -> None:
    assert "Traceback" not in text, text
    if case.stops:
        assert code == 2, f"exit {code}\n{text}"
        assert "error: " in text and "fix: " in text, text
    else:
        assert code == 0, f"exit {code}\n{text}"
    for fragment in (case.see, *case.names) + ((case.do,) if case.stops else ()):
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    if path is not None:
        assert str(path) in text, f"{path} not named in:\n{text}"


# ---------------------------------------------------------------------------------------------- graphs
@pytest.mark.parametrize("case", [c for c in CASES if c.group == "graph"], ids=lambda c: c.id)
def test_broken_graph_stops_with_its_message(case):
    if case.id == "include_cycle":
        path = CORPUS / "graphs" / "include_cycle_a.yml"
        code, text = run_cli(train.main, ["-c", path])
    else:
        path = CORPUS / "graphs" / f"{case.id}.yaml"
        code, text = run_cli(info.main, [path])
    check_message(case, code, text, path)


def test_graph_cli_subprocess_shows_traceback_only_with_debug():
    path = CORPUS / "graphs" / "typo_block.yaml"
    plain = subprocess.run([sys.executable, "-m", "analyze.info", str(path)], cwd=REPO, env=subprocess_env(),
                           capture_output=True, text=True, timeout=120)
    debug = subprocess.run([sys.executable, "-m", "analyze.info", str(path), "--debug"], cwd=REPO,
                           env=subprocess_env(), capture_output=True, text=True, timeout=120)
    check_message(BY_ID["typo_block"], plain.returncode, plain.stdout + plain.stderr, path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "GraphError" in debug.stderr


# -------------------------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """4 train + 2 val images of 64 px, category ids 1..3 (the demo generator's COCO-style ids)."""
    return make_data(tmp_path_factory.mktemp("corpus_demo"), train=4, val=2)


def copy_demo(demo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(demo, root)
    return root


def edit_annotations(root: Path, edit) -> Path:
    path = root / "train" / ANN
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    return path


def train_argv(cfg: dict, tmp_path: Path, *extra) -> list:
    return ["-c", write_config(cfg, tmp_path / "run.yml"), "-d", "cpu", "--output-dir", tmp_path / "out", *extra]


def first_box_edit(bbox=None, **fields):
    def edit(coco):
        first = next(a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"])
        assert first["id"] == 1 and first["image_id"] == 1
        if bbox is not None:
            first["bbox"] = bbox
        first.update(fields)
    return edit


def break_duplicate_ids(coco):
    coco["images"][1]["id"] = coco["images"][0]["id"]


STOPPING_EDITS = {
    "category_out_of_range": first_box_edit(category_id=7),
    "duplicate_image_ids": break_duplicate_ids,
}


@pytest.mark.parametrize("case_id", ["category_out_of_range", "duplicate_image_ids", "missing_image", "corrupt_jpeg"])
def test_broken_dataset_stops_with_its_message(demo, tmp_path, case_id):
    root = copy_demo(demo, tmp_path)
    ann_file = root / "train" / ANN
    image = root / "train" / "000001.jpg"
    if case_id in STOPPING_EDITS:
        edit_annotations(root, STOPPING_EDITS[case_id])
    elif case_id == "missing_image":
        image.unlink()
    else:  # the header (and size) still read; the pixels do not
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
        assert Image.open(image).size == (96, 96)
    code, text = run_cli(train.main, train_argv(tiny_config(root, epochs=1), tmp_path))
    check_message(BY_ID[case_id], code, text, image if case_id == "corrupt_jpeg" else ann_file)


def test_yolo_label_with_six_columns_stops_with_file_and_line(demo, tmp_path):
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir()
        for image in sorted((demo / split).glob("*.jpg")):
            shutil.copy(image, root / split / "images" / image.name)
            (root / split / "labels" / f"{image.stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    label = root / "train" / "labels" / "000001.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1 0.9\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "train/images",
                                                     "val": "val/images", "names": ["a", "b", "c"]}))
    cfg = tiny_config(root, epochs=1)
    for key, split in (("train_dataloader", "train"), ("val_dataloader", "val")):
        transforms = cfg[key]["dataset"]["transforms"]
        cfg[key]["dataset"] = {"type": "yolo", "data_yaml": str(root / "data.yaml"), "split": split,
                               "transforms": transforms}
    code, text = run_cli(train.main, train_argv(cfg, tmp_path))
    check_message(BY_ID["yolo_six_columns"], code, text, label)


def raw_targets(root: Path, verbose=False):
    """The train split as the trainer loads it, before augmentation: (dataset, [(image, target)])."""
    section = {"dataset": {"type": "coco", "img_folder": str(root / "train"), "ann_file": str(root / "train" / ANN)}}
    dataset = build_dataset(section, "train", verbose=verbose)
    return dataset, [dataset.load_item(i) for i in range(len(dataset))]


def annotations_by_image(root: Path) -> dict:
    coco = json.loads((root / "train" / ANN).read_text())
    by_image = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        by_image[a["image_id"]].append(a)
    return by_image


@pytest.mark.parametrize("case_id, mapping", [
    ("one_based_ids", {1: 1, 2: 2, 3: 3}),
    ("sparse_ids", {1: 5, 2: 17, 3: 90}),
    ("string_ids", {1: "circle", 2: "square", 3: "triangle"}),
])
def test_category_ids_of_any_kind_train_as_contiguous_labels(demo, tmp_path, case_id, mapping):
    root = copy_demo(demo, tmp_path)

    def remap(coco):
        for c in coco["categories"]:
            c["id"] = mapping[c["id"]]
        for a in coco["annotations"]:
            a["category_id"] = mapping[a["category_id"]]
    edit_annotations(root, remap)
    dataset, items = raw_targets(root)
    assert dataset.category_ids == [mapping[1], mapping[2], mapping[3]]
    label_of = {cat: i for i, cat in enumerate(dataset.category_ids)}
    expected = annotations_by_image(root)
    for _, target in items:
        anns = expected[int(target["image_id"])]
        assert target["labels"].tolist() == [label_of[a["category_id"]] for a in anns]


def warning_of(root: Path, edit) -> tuple[str, list]:
    edit_annotations(root, edit)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _, items = raw_targets(root, verbose=True)
    return out.getvalue(), items


def xyxy_pixels(target) -> list[list[float]]:
    """Targets before transforms keep xyxy boxes in the image's pixels."""
    return target["boxes"].as_subclass(torch.Tensor).tolist()


def test_box_outside_the_image_is_clamped_with_a_warning(demo, tmp_path):
    root = copy_demo(demo, tmp_path)
    before = annotations_by_image(root)[1]
    text, items = warning_of(root, first_box_edit([60.0, 60.0, 50.0, 50.0]))
    check_message(BY_ID["box_outside_image"], 0, text)
    assert xyxy_pixels(items[0][1])[0] == [60.0, 60.0, 96.0, 96.0] and len(items[0][1]["labels"]) == len(before)


@pytest.mark.parametrize("case_id, bbox", [("zero_area_box", [10.0, 10.0, 0.0, 8.0]),
                                           ("nan_box", [float("nan"), 10.0, 8.0, 8.0])])
def test_unusable_box_is_dropped_with_a_warning(demo, tmp_path, case_id, bbox):
    root = copy_demo(demo, tmp_path)
    before = annotations_by_image(root)[1]
    text, items = warning_of(root, first_box_edit(bbox))
    check_message(BY_ID[case_id], 0, text)
    kept = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in before[1:]]
    np.testing.assert_allclose(xyxy_pixels(items[0][1]), np.array(kept).reshape(-1, 4), atol=1e-4)


def test_annotation_of_a_missing_image_is_dropped_with_a_warning(demo, tmp_path):
    root = copy_demo(demo, tmp_path)
    before = annotations_by_image(root)
    text, items = warning_of(root, first_box_edit(image_id=999))
    check_message(BY_ID["annotation_of_missing_image"], 0, text)
    assert [len(t["labels"]) for _, t in items] == [len(before[1]) - 1] + [len(before[i]) for i in (2, 3, 4)]


def test_empty_annotation_list_gives_negatives(demo, tmp_path):
    root = copy_demo(demo, tmp_path)
    edit_annotations(root, lambda coco: coco.update(annotations=[]))
    dataset, items = raw_targets(root)
    assert dataset.num_classes == 3 and len(items) == 4
    assert all(t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) for _, t in items)


def replace_first_image(root: Path, image: Image.Image, name: str, **save) -> None:
    """Swap image 1's file for `image` (saved as `name`), keeping its annotation entry."""
    (root / "train" / "000001.jpg").unlink()
    image.save(root / "train" / name, **save)
    edit_annotations(root, lambda coco: coco["images"][0].update(file_name=name, width=image.width, height=image.height))


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16bit_images_load_as_8bit_rgb(demo, tmp_path, mode):
    root = copy_demo(demo, tmp_path)
    ramp = np.arange(96 * 96).reshape(96, 96)
    pixels = {"L": (ramp % 256).astype(np.uint8),
              "RGBA": np.stack([ramp % 256, ramp % 7, ramp % 5, ramp % 3], -1).astype(np.uint8),
              "I;16": (ramp * 7).astype(np.uint16)}[mode]
    replace_first_image(root, Image.fromarray(pixels), "odd.png")
    expected = {"L": np.repeat(pixels[..., None], 3, -1), "RGBA": pixels[..., :3],
                "I;16": np.repeat((pixels >> 8).astype(np.uint8)[..., None], 3, -1)}[mode]
    image, target = raw_targets(root)[1][0]
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)
    assert len(target["labels"]) == len(annotations_by_image(root)[1])


def test_exif_rotated_image_loads_upright_with_its_boxes(demo, tmp_path):
    root = copy_demo(demo, tmp_path)
    upright = np.zeros((64, 32, 3), np.uint8)              # 32 wide, 64 high, as a viewer shows it
    upright[40:50, 2:12] = 255                              # the object, annotated in this frame
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)   # pixels as the camera stored them
    exif = Image.Exif()
    exif[0x0112] = 6                                        # "rotate 90 clockwise to view"
    replace_first_image(root, stored, "phone.jpg", exif=exif, quality=100)
    edit_annotations(root, lambda coco: coco["images"][0].update(width=32, height=64))
    edit_annotations(root, lambda coco: coco.update(annotations=[
        dict(a, bbox=[2.0, 40.0, 10.0, 10.0], area=100.0) if a["id"] == 1 else a
        for a in coco["annotations"] if a["image_id"] != 1 or a["id"] == 1]))
    text, items = warning_of(root, lambda coco: None)
    assert "size_mismatch" not in text
    image, target = items[0]
    assert image.size == (32, 64) and xyxy_pixels(target) == [[2.0, 40.0, 12.0, 50.0]]
    inside, outside = np.asarray(image)[41:49, 3:11], np.asarray(image)[:35]
    assert inside.min() > 200 and outside.max() < 50        # the box sits on the object


def sparse_ids(coco: dict) -> dict:
    sparse = {1: 5, 2: 17, 3: 90}
    for c in coco["categories"]:
        c["id"] = sparse[c["id"]]
    for a in coco["annotations"]:
        a["category_id"] = sparse[a["category_id"]]
    return coco


def test_quirky_but_valid_dataset_trains_from_the_cli(demo, tmp_path):
    """Sparse ids, a clamped, a zero-area and a NaN box, an orphan annotation and a greyscale
    image in one dataset: train.py warns and trains."""
    root = copy_demo(demo, tmp_path)
    replace_first_image(root, Image.new("L", (96, 96), 128), "grey.png")

    def quirks(coco):
        sparse_ids(coco)
        coco["annotations"][0]["bbox"] = [40.0, 40.0, 80.0, 80.0]
        coco["annotations"][1]["bbox"] = [10.0, 10.0, 0.0, 8.0]
        coco["annotations"][2]["bbox"] = [float("nan"), 1.0, 2.0, 2.0]
        coco["annotations"][3]["image_id"] = 999
    edit_annotations(root, quirks)
    val = root / "val" / ANN
    val.write_text(json.dumps(sparse_ids(json.loads(val.read_text()))))
    code, text = run_cli(train.main, train_argv(tiny_config(root, epochs=1), tmp_path))
    assert code == 0 and "Traceback" not in text, text
    for kind in ("box_clamped", "box_degenerate", "box_nan", "unknown_image"):
        assert kind in text
    state = read_checkpoint(tmp_path / "out" / "last.pth")
    assert state["meta"]["category_ids"] == [5, 17, 90] and state["epoch"] == 0


# ----------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def saved_run(demo, tmp_path_factory):
    """A tiny run's config and its last.pth (written by the trainer, before any step)."""
    folder = tmp_path_factory.mktemp("corpus_ckpt")
    cfg_path = write_config(tiny_config(demo, epochs=1), folder / "tiny.yml")
    from engine.config import load_config
    from engine.solver import Solver

    with contextlib.redirect_stdout(io.StringIO()):
        Solver(load_config(cfg_path), device="cpu", output_dir=str(folder / "run")).save("last.pth")
    return cfg_path, folder / "run" / "last.pth"


def ckpt_argv(cfg_path, tmp_path, *extra) -> list:
    return ["-c", cfg_path, "-d", "cpu", "--output-dir", tmp_path / "out", *extra]


def test_truncated_checkpoint_stops(saved_run, tmp_path):
    cfg_path, last = saved_run
    torn = tmp_path / "truncated.pth"
    torn.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code, text = run_cli(train.main, ckpt_argv(cfg_path, tmp_path, "-r", torn))
    check_message(BY_ID["truncated_checkpoint"], code, text, torn)


def test_checkpoint_of_another_graph_stops_on_resume(saved_run, tmp_path):
    cfg_path, _ = saved_run
    other = dict(TINY_GRAPH, backbone=[[-1, 1, "Conv", [16, 3, 2]], *TINY_GRAPH["backbone"][1:]])
    path = tmp_path / "other_graph.pth"
    torch.save({"model": build_model(other, check=False).state_dict()}, path)
    code, text = run_cli(train.main, ckpt_argv(cfg_path, tmp_path, "-r", path))
    check_message(BY_ID["other_graph_checkpoint"], code, text, path)


def test_pickle_that_runs_code_is_refused(saved_run, tmp_path):
    cfg_path, _ = saved_run
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": RunsCode(str(marker))}, path)
    code, text = run_cli(train.main, ckpt_argv(cfg_path, tmp_path, "-t", path))
    check_message(BY_ID["pickle_runs_code"], code, text, path)
    assert not marker.exists()
    # the explicit way for a trusted legacy file: rewrite it once, then -t/-r read it safely
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": LegacyArgs()}, legacy)
    code, text = run_cli(checkpoint.main, [legacy, tmp_path / "plain.pth", "--trust"])
    assert code == 0 and torch.equal(read_checkpoint(tmp_path / "plain.pth")["model"]["w"], torch.ones(2))


class RunsCode:
    """Unpickling it would write `marker`: a stand-in for any code a file could run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


class LegacyArgs:
    """An object inside an old checkpoint (e.g. an argparse namespace): harmless, but not a tensor."""


def test_finetune_from_another_class_count_trains_from_the_cli(demo, saved_run, tmp_path):
    _, last = saved_run
    cfg = tiny_config(demo, epochs=1)
    for split, key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        cfg[key]["dataset"]["ann_file"] = str(drop_category(demo, split, 3, tmp_path / f"{split}.json"))
    code, text = run_cli(train.main, train_argv(cfg, tmp_path, "-t", last))
    check_message(BY_ID["other_class_count"], code, text)
    assert read_checkpoint(tmp_path / "out" / "last.pth")["meta"]["nc"] == 2


def test_official_layout_checkpoint_is_converted_by_finetune(demo, tmp_path):
    from tests.test_convert import WHOLE, official_layout

    torch.manual_seed(0)
    source = build_model(WHOLE, check=False)
    path = tmp_path / "official.pth"
    torch.save({"ema": {"module": official_layout(source)}}, path)
    code, text = run_cli(train.main, train_argv(tiny_config(demo, epochs=1, graph=WHOLE, criterion={"reg_max": 8}), tmp_path, "-t", path))
    check_message(BY_ID["official_layout"], code, text)
    assert f"loaded {len(source.state_dict())} tensors" in text
