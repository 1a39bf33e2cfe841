"""bench/vs_official.py measures our trainer with the user's -u options: they reach the run config it
writes (merged as train.py merges them), including keys inside the loader sections the bench sets itself."""
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import vs_official  # noqa: E402


def settings(tmp_path, updates):
    return {"model": "deim-n", "imgsz": 320, "epochs": 2, "batch": 4, "workers": 0, "mosaic_prob": 0.5,
            "data": str(tmp_path / "data"), "out": str(tmp_path / "out"), "updates": updates}


def test_updates_reach_the_loader_sections_the_bench_writes(tmp_path):
    path = vs_official.our_config(settings(tmp_path, ["train_dataloader.dataset.ram_cache=true",
                                                      "train_dataloader.num_workers=2", "channels_last=true"]))
    cfg = yaml.safe_load(path.read_text())
    train = cfg["train_dataloader"]
    assert train["dataset"]["ram_cache"] is True and train["num_workers"] == 2 and cfg["channels_last"] is True
    # the bench's own values around them are kept
    assert train["dataset"]["img_folder"] == str(tmp_path / "data" / "train") and train["total_batch_size"] == 4


def test_a_malformed_update_stops_before_measuring(capsys):
    with pytest.raises(SystemExit):
        vs_official.main(["-u", "ram_cache"])
    assert "is not of the form key=value" in capsys.readouterr().err
