"""YOLO layouts: conversion to COCO (round trip within 1 px), direct training, clear label errors."""
import json

import pytest
import torch
import yaml
from PIL import Image

from data import DataError, build_dataset
from data.yolo import label_path, read_labels
from data.yolo2coco import convert, main as yolo2coco_main

# (image size, label rows) per image; rows are `class cx cy w h` normalised
TRAIN = {"a.jpg": ((64, 48), [(0, 0.5, 0.5, 0.25, 0.5), (2, 0.1, 0.9, 0.2, 0.2)]),
         "b.png": ((40, 80), [(1, 0.3, 0.25, 0.5, 0.4)]),
         "neg.jpg": ((32, 32), None)}  # no label file: a negative
VAL = {"c.jpg": ((50, 50), [(2, 0.5, 0.5, 0.9, 0.3)])}


def write_yolo(root, names=("cat", "dog", "bird"), roboflow_paths=False):
    for split, images in (("train", TRAIN), ("val", VAL)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for name, (size, rows) in images.items():
            Image.new("RGB", size, (120, 60, 30)).save(root / split / "images" / name)
            if rows is not None:
                lines = [" ".join(str(v) for v in row) for row in rows]
                (root / split / "labels" / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    prefix = "../" if roboflow_paths else ""
    (root / "data.yaml").write_text(yaml.safe_dump({"train": f"{prefix}train/images", "val": f"{prefix}val/images",
                                                    "nc": len(names), "names": list(names)}))
    return root / "data.yaml"


def pixel_boxes(size, rows):
    w, h = size
    return [[(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h] for _, cx, cy, bw, bh in rows or []]


def test_yolo2coco_round_trips_within_one_pixel(tmp_path):
    write_yolo(tmp_path / "yolo")
    files = convert(tmp_path / "yolo", tmp_path / "coco")
    assert set(files) == {"train", "val"}
    coco = json.loads(files["train"].read_text())
    assert coco["categories"] == [{"id": 0, "name": "cat", "supercategory": "none"},
                                  {"id": 1, "name": "dog", "supercategory": "none"},
                                  {"id": 2, "name": "bird", "supercategory": "none"}]
    by_name = {im["file_name"]: im for im in coco["images"]}
    assert set(by_name) == set(TRAIN) and all((tmp_path / "coco/train" / n).is_file() for n in TRAIN)
    for name, (size, rows) in TRAIN.items():
        image = by_name[name]
        assert (image["width"], image["height"]) == size
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert [a["category_id"] for a in anns] == [r[0] for r in rows or []]
        for a, expected in zip(anns, pixel_boxes(size, rows)):
            assert a["bbox"] == pytest.approx(expected, abs=1.0)
            # and back to YOLO
            x, y, bw, bh = a["bbox"]
            row = next(r for r in rows if r[0] == a["category_id"])
            w, h = size
            assert [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h] == pytest.approx(row[1:], abs=1.0 / min(w, h))


def test_direct_yolo_training_matches_the_converted_coco(tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo", roboflow_paths=True)
    files = convert(data_yaml, tmp_path / "coco", splits=["train"])
    ops = {"ops": [{"type": "ConvertPILImage"}, {"type": "ConvertBoxes"}]}
    direct = build_dataset({"dataset": {"type": "yolo", "data_yaml": str(data_yaml), "split": "train",
                                        "transforms": ops}}, verbose=False)
    converted = build_dataset({"dataset": {"type": "coco", "img_folder": str(tmp_path / "coco/train"),
                                           "ann_file": str(files["train"]), "transforms": ops}}, verbose=False)
    assert direct.names == converted.names == ["cat", "dog", "bird"] and direct.category_ids == [0, 1, 2]
    assert len(direct) == len(converted) == 3
    for i in range(3):
        (a, ta), (b, tb) = direct[i], converted[i]
        assert torch.equal(a, b) and torch.allclose(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    # class 0 box of a.jpg: cxcywh normalised equals the label row (boxes inside the image are exact)
    index = [im["file_name"].endswith("a.jpg") for im in direct.coco.dataset["images"]].index(True)
    assert torch.allclose(direct[index][1]["boxes"][0], torch.tensor([0.5, 0.5, 0.25, 0.5]))


def test_wrong_column_count_names_file_and_line(tmp_path):
    labels = tmp_path / "x.txt"
    labels.write_text("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2\n")
    with pytest.raises(DataError) as err:
        read_labels(labels, {0: "a", 1: "b"})
    assert f"{labels}:3" in str(err.value) and "found 4" in str(err.value)
    labels.write_text("5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"x.txt:1: class 5 is not in data.yaml's names \(ids \[0, 1\]\)"):
        read_labels(labels, {0: "a", 1: "b"})


def test_pixel_coordinates_are_refused_and_exporter_quirks_read(tmp_path):
    """Pixel labels would otherwise become boxes far outside every image: all dropped, and training
    would go on with no objects at all."""
    labels = tmp_path / "x.txt"
    labels.write_text("0 0.5 0.5 0.2 0.2\n1 320 240 64 48\n")
    with pytest.raises(DataError, match="x.txt:2: coordinates outside 0..1") as err:
        read_labels(labels, {0: "a", 1: "b"})
    assert "fractions of the image" in str(err.value)
    labels.write_text("0 0.5 0.5 0.2 -0.3\n")
    with pytest.raises(DataError, match="outside 0..1"):
        read_labels(labels, {0: "a"})
    labels.write_bytes("\ufeff1.0 0.5 0.5 1.0004 0.2\n".encode())  # a byte-order mark, a float class, a rounded 1
    assert read_labels(labels, {0: "a", 1: "b"}) == [(1, 0.5, 0.5, 1.0004, 0.2)]
    labels.write_text("1.5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="class 1.5 is not a whole number"):
        read_labels(labels, {0: "a", 1: "b"})


def test_label_path_follows_the_ultralytics_rule(tmp_path):
    assert label_path(tmp_path / "images/train/images/x.jpg") == tmp_path / "images/train/labels/x.txt"


def test_missing_split_and_names_are_clear_errors(tmp_path):
    (tmp_path / "data.yaml").write_text("train: nowhere/images\nnames: [a]\n")
    with pytest.raises(DataError, match="`train: nowhere/images` not found"):
        build_dataset({"dataset": {"type": "yolo", "data_yaml": str(tmp_path / "data.yaml")}}, verbose=False)
    (tmp_path / "data.yaml").write_text("train: x\n")
    with pytest.raises(DataError, match="no `names`"):
        build_dataset({"dataset": {"type": "yolo", "data_yaml": str(tmp_path / "data.yaml")}}, verbose=False)


def test_yolo2coco_cli(tmp_path, capsys):
    write_yolo(tmp_path / "yolo", names={0: "cat", 1: "dog", 2: "bird"})
    yolo2coco_main(["--src", str(tmp_path / "yolo"), "--dst", str(tmp_path / "out"), "--link"])
    assert "train: 3 images, 3 boxes" in capsys.readouterr().out
    assert (tmp_path / "out/val/_annotations.coco.json").is_file() and (tmp_path / "out/val/c.jpg").is_symlink()
