"""End to end on CPU: train.py, --test-only, predict.py, resume, torchrun DDP, non-finite guard, -t."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from blocks.decoder._dfine_parts import weighted_sum
from core.checkpoint_io import read_checkpoint
from engine import checkpoint
from engine.config import load_config
from engine.solver import Solver, TrainingDiverged
from tests.engine_helpers import REPO, drop_category, free_port, make_data, subprocess_env, tiny_config, write_config


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("demo"))


def run(args, **kwargs):
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=600, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def solver(cfg_path, **options):
    return Solver(load_config(cfg_path), device="cpu", **options)


@pytest.mark.slow
def test_train_then_test_only_reproduces_logged_ap_and_predict_writes_output(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo), tmp_path / "tiny.yml")
    out = tmp_path / "run"
    run(["train.py", "-c", str(cfg_path), "-d", "cpu", "--seed", "3", "--output-dir", str(out)])
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    for name in ("config.yml", "args.json", "last.pth", "best_stg1.pth", "train_batch_epoch0.jpg"):
        assert (out / name).is_file(), name
    assert json.loads((out / "args.json").read_text())["seed"] == 3

    test_dir = tmp_path / "test"
    run(["train.py", "-c", str(cfg_path), "-d", "cpu", "--test-only", "-r", str(out / "last.pth"),
         "--output-dir", str(test_dir)])
    stats = json.loads((test_dir / "test_stats.json").read_text())
    logged = log[-1]
    names = ["AP50:95", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert stats["stats"] == [logged[f"test_{n}"] for n in names]       # bit-identical evaluation
    predictions = json.loads((test_dir / "predictions.json").read_text())
    # the same detections, box for box and score for score, as the last epoch's evaluation
    assert predictions and predictions == json.loads((out / "predictions_last.json").read_text())
    assert (test_dir / "confusion_matrix.png").stat().st_size > 0
    assert {p["category_id"] for p in predictions} <= {1, 2, 3}         # the dataset's own ids
    assert stats["model"]["params"] > 0 and stats["model"]["gflops"] > 0
    # TIDE on the same predictions: its AP50 is TIDE's own 101-point AP at IoU 0.5, equal to the
    # standalone tool's on the saved files
    from metrics.tide import evaluate as tide_errors
    standalone = tide_errors(str(demo / "val/_annotations.coco.json"), str(test_dir / "predictions.json"))
    assert stats["tide"] == json.loads(json.dumps(standalone.as_dict()))
    assert (test_dir / "tide.png").stat().st_size > 0
    # without --output-dir the evaluation lands in the run's eval/ folder and leaves the run's files alone
    run_config = (out / "config.yml").read_text()
    run(["train.py", "-c", str(cfg_path), "-d", "cpu", "--test-only", "-r", str(out / "last.pth")])
    assert json.loads((out / "eval/test_stats.json").read_text())["stats"] == stats["stats"]
    assert (out / "config.yml").read_text() == run_config

    pred_dir = tmp_path / "pred"
    printed = run(["predict.py", "-c", str(cfg_path), "-r", str(out / "last.pth"), "-i", str(demo / "val"),
                   "-o", str(pred_dir), "--conf", "0.0", "-d", "cpu"])
    detections = json.loads((pred_dir / "detections.json").read_text())
    images = sorted(p.name for p in (demo / "val").glob("*.jpg"))
    assert sorted(detections) == images
    assert all((pred_dir / name).is_file() for name in images)
    first = detections[images[0]]
    assert len(first) == 30 and first[0]["class"] in {"circle", "square", "triangle"}  # names from the checkpoint
    assert "detections" in printed


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo, epochs=2), tmp_path / "tiny.yml")
    straight = solver(cfg_path, output_dir=str(tmp_path / "straight"))
    straight.fit()
    first = solver(cfg_path, output_dir=str(tmp_path / "split"))
    first.fit(max_epochs=1)
    assert first.epoch == 0
    resumed = solver(cfg_path, output_dir=str(tmp_path / "split"), auto_resume=True)   # finds split/last.pth
    assert resumed.output_dir == tmp_path / "split" and resumed.epoch == 0   # continues in its own folder
    resumed.fit()
    a = read_checkpoint(tmp_path / "straight/last.pth")
    b = read_checkpoint(tmp_path / "split/last.pth")
    assert weights_equal(a["model"], b["model"]) and weights_equal(a["ema"]["module"], b["ema"]["module"])
    assert a["stats"]["stats"] == b["stats"]["stats"]
    assert a["global_step"] == b["global_step"] == 8 and a["epoch"] == b["epoch"] == 1
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_and_rank0_checkpoint_loads_alone(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo, epochs=1), tmp_path / "tiny.yml")
    out = tmp_path / "ddp"
    port = free_port()
    run(["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "train.py", "-c", str(cfg_path),
         "-d", "cpu", "--output-dir", str(out)])
    assert not (tmp_path / "ddp2").exists()                             # both ranks used one folder
    logged = json.loads((out / "log.txt").read_text().splitlines()[-1])
    state = read_checkpoint(out / "last.pth")
    assert not any(k.startswith("module.") for k in state["model"])
    single = solver(cfg_path, output_dir=str(tmp_path / "single"), resume=str(out / "last.pth"), test_only=True)
    stats = single.evaluate()
    # all 8 val images split over 2 ranks (batches of 2), gathered and evaluated once; one process
    # (batches of 4) sees the same detections up to float noise that depends on batch composition
    ddp = json.loads((out / "predictions_last.json").read_text())
    alone = single.evaluator.detections
    assert len(ddp) == len(alone) == 8 * 30
    assert [d["image_id"] for d in ddp] == [d["image_id"] for d in alone]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(ddp, alone)) < 2e-3
    assert stats["stats"][0] == pytest.approx(logged["test_AP50:95"], abs=1e-3)


class NaNAtSteps(torch.nn.Module):
    """Wraps a criterion; its loss becomes NaN at the given (0-based) calls."""

    def __init__(self, criterion, steps):
        super().__init__()
        self.criterion, self.steps, self.calls = criterion, set(steps), 0

    def forward(self, outputs, targets, epoch=0):
        losses = self.criterion(outputs, targets, epoch=epoch)
        if self.calls in self.steps:
            losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
        self.calls += 1
        return losses


@pytest.mark.slow
def test_non_finite_loss_is_skipped_reported_and_training_continues(demo, tmp_path, capsys):
    cfg_path = write_config(tiny_config(demo, epochs=1), tmp_path / "tiny.yml")
    run_ = solver(cfg_path, output_dir=str(tmp_path / "nan"))
    run_.criterion = NaNAtSteps(run_.criterion, steps={1})
    before = {k: v.clone() for k, v in run_.raw_model.state_dict().items()}
    run_.fit()
    printed = capsys.readouterr().out
    assert "non-finite loss or predicted boxes at epoch 0 step 1" in printed and "'loss_bbox': nan" in printed
    dumps = list((tmp_path / "nan/debug").glob("nonfinite_*.pth"))
    assert len(dumps) == 1
    dump = read_checkpoint(dumps[0])
    assert len(dump["image_ids"]) == 4 and f"image ids {dump['image_ids']}" in printed
    assert run_.bad_total == 1 and run_.global_step == 4
    after = run_.raw_model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)    # the other 3 steps trained
    assert json.loads((tmp_path / "nan/log.txt").read_text())["bad_steps"] == 1


def test_consecutive_non_finite_steps_stop_with_a_clear_message(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo, epochs=1, max_bad_steps=2), tmp_path / "tiny.yml")
    run_ = solver(cfg_path, output_dir=str(tmp_path / "diverge"))
    run_.criterion = NaNAtSteps(run_.criterion, steps=range(100))
    with pytest.raises(TrainingDiverged, match="2 consecutive steps had a non-finite loss") as err:
        run_.fit()
    assert "--use-amp" in err.value.hint


def test_finetune_from_other_class_count_lists_mismatched_heads(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo, epochs=1), tmp_path / "tiny.yml")
    source = solver(cfg_path, output_dir=str(tmp_path / "src"))
    source.save("three_classes.pth")
    two = tmp_path / "two"
    two.mkdir()
    cfg = tiny_config(demo, epochs=1)
    for split, key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        cfg[key]["dataset"]["ann_file"] = str(drop_category(demo, split, 3, two / f"{split}.json"))
    target = solver(write_config(cfg, tmp_path / "two.yml"), output_dir=str(tmp_path / "dst"),
                    tuning=str(tmp_path / "src/three_classes.pth"))
    assert target.nc == 2
    report = target.finetune_report
    mismatched = {name for name, _, _ in report["mismatched"]}
    assert mismatched and all(("score_head" in n or "denoising_class_embed" in n) for n in mismatched)
    assert report["source"] == "ema" and report["loaded"] + len(mismatched) == len(source.raw_model.state_dict())
    ema = source.ema.module.state_dict()
    loaded = target.raw_model.state_dict()
    assert all(torch.equal(loaded[k].cpu(), ema[k].cpu()) for k in ema if k not in mismatched)
    assert not any(torch.equal(loaded[k], ema[k]) for k in mismatched if loaded[k].shape == ema[k].shape)
    assert math.isfinite(target.evaluate()["stats"][0])


def _steps(demo, tmp_path, steps: int, **options):
    """Losses of `steps` training steps on the first batch and the weights after them, under run options."""
    name = "_".join(f"{k}{v}" for k, v in options.items())
    run_ = solver(write_config(tiny_config(demo, epochs=1, **options), tmp_path / f"{name}.yml"),
                  output_dir=str(tmp_path / name))
    images, targets = next(iter(run_.train_loader))
    if options.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)
        assert run_.raw_model.layers[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    if options.get("compile"):  # the decoder's deformable attention runs its compiled weighted sum
        attention = [m for m in run_.raw_model.modules() if hasattr(m, "compile_weighted_sum")]
        assert attention and all(m.weighted_sum is not weighted_sum for m in attention)
    torch.manual_seed(0)
    losses = [run_.train_step(images, targets, 0, step)["loss"] for step in range(steps)]
    weights = {k: v.clone() for k, v in run_.raw_model.state_dict().items()}
    run_.close()
    return losses, weights


def _assert_same_training(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-4)
    for name, value in a[1].items():
        torch.testing.assert_close(b[1][name], value, rtol=1e-3, atol=1e-5)


def test_channels_last_training_steps_equal_the_default_layout(demo, tmp_path):
    # run option `channels_last`: the same three steps give the same losses and weights to float rounding
    _assert_same_training(_steps(demo, tmp_path, 3, channels_last=False), _steps(demo, tmp_path, 3, channels_last=True))


@pytest.mark.heavy
def test_compiled_training_steps_equal_eager_ones(demo, tmp_path):
    # run option `compile`: the first step compiles (inductor, CPU; ~40 s here), and the losses and weights
    # equal eager mode's to float rounding
    _assert_same_training(_steps(demo, tmp_path, 2, compile=False), _steps(demo, tmp_path, 2, compile=True))
