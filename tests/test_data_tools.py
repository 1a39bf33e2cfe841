"""Demo data generator and the dataset analyzer."""
import hashlib
import json

import pytest

from analyze.dataset import dataset_stats, main as analyze_main
from data.demo import main as demo_main, make_demo


def digest(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_is_deterministic_and_uses_coco_style_ids(tmp_path):
    make_demo(tmp_path / "a", train=6, val=3, imgsz=64, seed=5)
    make_demo(tmp_path / "b", train=6, val=3, imgsz=64, seed=5)
    make_demo(tmp_path / "c", train=6, val=3, imgsz=64, seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    coco = json.loads((tmp_path / "a/train/_annotations.coco.json").read_text())
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3] and len(coco["images"]) == 6
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64 and w > 0 and h > 0


def test_demo_defaults_have_negatives_and_every_class(tmp_path, capsys):
    demo_main(["--out", str(tmp_path), "--train", "24", "--val", "4", "--imgsz", "96"])
    assert "train: 24 images" in capsys.readouterr().out
    stats = dataset_stats(json.loads((tmp_path / "train/_annotations.coco.json").read_text()))
    assert stats["negatives"] >= 1 and all(c["instances"] > 0 for c in stats["classes"])


def test_analyzer_counts_by_hand(tmp_path, capsys):
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
                       {"id": 2, "file_name": "b.jpg", "width": 200, "height": 100},
                       {"id": 3, "file_name": "c.jpg", "width": 200, "height": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10], "area": 100},
                            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 50, 50], "area": 2500},
                            {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 100, 100], "area": 10000},
                            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [0, 0, 20, 80], "area": 1600,
                             "iscrowd": 1}],
            "categories": [{"id": 9, "name": "nine"}, {"id": 5, "name": "five"}, {"id": 7, "name": "seven"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    stats = analyze_main([str(path), "--plot", str(tmp_path / "stats.png")])
    assert [(c["id"], c["name"], c["instances"], c["images"]) for c in stats["classes"]] == [
        (5, "five", 2, 1), (7, "seven", 0, 0), (9, "nine", 1, 1)]
    assert (stats["small"], stats["medium"], stats["large"]) == (1, 1, 1)
    assert stats["boxes_per_image"] == [2, 1, 0] and stats["negatives"] == 1 and stats["crowd"] == 1
    assert stats["rel_w"] == [0.05, 0.25, 0.5] and stats["aspect"] == [1.0, 1.0, 1.0]
    out = capsys.readouterr().out
    assert "3 images (1 without boxes), 3 boxes, 1 crowd" in out and "five" in out
    assert (tmp_path / "stats.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (["--train", "0"], "--train must be at least 1"),
    (["--imgsz", "8"], "--imgsz must be at least 32"),          # shapes below a pixel: a division by zero
    (["--classes", "99"], "--classes must be 1..8"),
    (["--sizes", "0.5", "0.1"], "--sizes must be 0 < LOW <= HIGH < 1"),
])
def test_demo_refuses_options_that_would_fail_midway(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        demo_main(["--out", str(tmp_path / "d"), *argv])
    assert message in capsys.readouterr().err and not (tmp_path / "d").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        demo_main(["--out", str(tmp_path / "file")])
    assert "is a file" in capsys.readouterr().err


def test_dataset_report_with_errors_exits_1_and_a_bad_plot_path_is_named(tmp_path, capsys):
    from core.errors import ConfigError

    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 5, 5]}],   # unknown category
            "categories": [{"id": 1, "name": "one"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(SystemExit) as err:
        analyze_main([str(path)])
    assert err.value.code == 1 and "a training run would stop" in capsys.readouterr().out
    for plot, message in ((tmp_path, "a folder"), (tmp_path / "nowhere" / "x.png", "its folder does not exist")):
        with pytest.raises(ConfigError, match=message):
            analyze_main([str(path), "--plot", str(plot)])


def test_tide_out_that_is_a_file_is_named_before_evaluating(tmp_path):
    from analyze.tide import main as tide_main
    from core.errors import ConfigError

    (tmp_path / "out").write_text("")
    with pytest.raises(ConfigError, match="--out .* is a file"):
        tide_main(["--gt", str(tmp_path / "missing.json"), "--pred", str(tmp_path / "missing.json"),
                   "--out", str(tmp_path / "out")])
