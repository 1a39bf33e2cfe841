"""Checkpoint files: atomic writes, safe loading, RNG round trip, weights-only loading with shape checks."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from core.checkpoint_io import read_checkpoint, save_atomic
from engine import checkpoint
from engine.run_dir import RunLock, claim_output_dir
from core.errors import CheckpointError


def test_atomic_save_replaces_whole_file_and_a_failed_save_keeps_the_old_one(tmp_path):
    path = tmp_path / "last.pth"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        save_atomic({"epoch": 2, "bad": lambda: 0}, path)   # not picklable: fails mid-save
    state = read_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]         # no temp file left behind


def test_atomic_save_copies_are_the_same_bytes_and_a_failed_save_touches_none(tmp_path):
    names = [tmp_path / n for n in ("best.pth", "best_stg1.pth", "last.pth")]
    save_atomic({"epoch": 1, "w": torch.arange(5.0)}, names[0], copies=names[1:])
    assert len({p.read_bytes() for p in names}) == 1
    assert read_checkpoint(names[2])["epoch"] == 1
    with pytest.raises(Exception):
        save_atomic({"epoch": 2, "bad": lambda: 0}, names[0], copies=names[1:])
    assert all(read_checkpoint(p)["epoch"] == 1 for p in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)


class Payload:
    """Any non-tensor class: weights_only loading must refuse to construct it."""


def test_load_refuses_arbitrary_pickles_and_torn_files(tmp_path):
    torch.save({"obj": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="torn or not a torch checkpoint"):
        read_checkpoint(tmp_path / "torn.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    save_atomic({"rng": checkpoint.rng_state()}, tmp_path / "r.pth")
    expected = (torch.rand(2), np.random.rand(), random.random())
    torch.manual_seed(123), np.random.seed(5), random.seed(9)
    checkpoint.set_rng_state(read_checkpoint(tmp_path / "r.pth")["rng"])
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_weights_only_loading_prefers_ema_and_lists_shape_mismatches(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 5))
    ema = {k: v + 1 for k, v in other.state_dict().items()}
    save_atomic({"model": other.state_dict(), "ema": {"module": ema}}, tmp_path / "c.pth")
    report = checkpoint.load_for_finetune(model, tmp_path / "c.pth")
    assert report["source"] == "ema" and report["loaded"] == 2
    assert report["mismatched"] == [("1.weight", (5, 8), (3, 8)), ("1.bias", (5,), (3,))]
    assert torch.equal(model[0].weight, ema["0.weight"])
    text = checkpoint.format_finetune_report(report)
    assert "1.weight: checkpoint [5, 8] vs model [3, 8]" in text


def test_new_runs_get_a_suffix_instead_of_overwriting(tmp_path):
    def claim(folder):
        chosen, lock = claim_output_dir(folder, reuse=False)
        lock.release()
        return chosen

    run = tmp_path / "demo"
    assert claim(run) == run
    assert claim(run) == run                                             # empty: reused
    (run / "log.txt").write_text("x")
    assert claim(run) == tmp_path / "demo2"
    (tmp_path / "demo2").mkdir(exist_ok=True)
    (tmp_path / "demo2" / "log.txt").write_text("x")
    assert claim(run) == tmp_path / "demo3"


def test_a_locked_folder_is_never_shared_and_a_stale_lock_is_taken_over(tmp_path):
    import subprocess
    import sys

    first, lock = claim_output_dir(tmp_path / "run", reuse=False)
    second, other = claim_output_dir(tmp_path / "run", reuse=False)  # empty, but held by a live run
    assert first == tmp_path / "run" and second == tmp_path / "run2"
    with pytest.raises(Exception, match="another run .* is writing"):
        claim_output_dir(tmp_path / "run", reuse=True)
    lock.release()
    other.release()
    # a lock left by a process that no longer exists (a killed run) is stale
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = RunLock(tmp_path / "run")
    stale.path.write_text('{"pid": %s, "host": "%s"}' % (dead.stdout.strip(), __import__("socket").gethostname()))
    chosen, lock = claim_output_dir(tmp_path / "run", reuse=True)
    assert chosen == tmp_path / "run" and lock.held


def test_mismatch_is_described_by_tensor_name():
    import torch

    from models.factory import describe_mismatch

    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert describe_mismatch(model, model.state_dict()) is None
    other = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5)).state_dict()
    other["extra"] = torch.zeros(1)
    del other["0.bias"]
    message = describe_mismatch(model, other)
    assert "1.weight: checkpoint [5, 3] vs model [2, 3]" in message
    assert "1 model tensors missing, e.g. 0.bias" in message and "1 unexpected tensors, e.g. extra" in message


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    from core.checkpoint_io import read_checkpoint as load, save_atomic

    (tmp_path / ".last.pth.abc123.tmp").write_bytes(b"torn")
    save_atomic({"epoch": 1}, tmp_path / "last.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"] and load(tmp_path / "last.pth")["epoch"] == 1


def test_ema_only_writes_the_ema_weights_and_meta_without_training_state(tmp_path):
    import subprocess
    import sys

    from tests.engine_helpers import REPO, subprocess_env

    model, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    full = {"model": model.state_dict(), "ema": {"module": ema.state_dict(), "updates": 7, "decay": 0.9999},
            "optimizer": torch.optim.AdamW(model.parameters()).state_dict(), "epoch": 4, "rng": checkpoint.rng_state(),
            "meta": {"names": ["行人", "car"], "nc": 2}}
    save_atomic(full, tmp_path / "last.pth")
    done = subprocess.run([sys.executable, "-m", "engine.checkpoint", str(tmp_path / "last.pth"),
                           str(tmp_path / "infer.pth"), "--ema-only"], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "the ema weights" in done.stdout
    written = read_checkpoint(tmp_path / "infer.pth")
    assert sorted(written) == ["meta", "model"] and written["meta"] == full["meta"]
    for name, value in ema.state_dict().items():  # the EMA's tensors, not the model's
        assert torch.equal(written["model"][name], value)
    assert not torch.equal(written["model"]["weight"], model.weight)
    # a run without EMA: the model's weights
    no_ema, source = checkpoint.inference_weights({"model": model.state_dict(), "optimizer": {}})
    assert source == "model" and sorted(no_ema) == ["model"]


def test_a_config_graph_the_checkpoint_overrides_is_named(tmp_path):
    """--test-only and a distillation teacher build the graph a checkpoint records; the config's own
    graph, when another, is named so that nobody believes it was evaluated."""
    import yaml

    from models.factory import unused_graph

    stored = {"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]]]}
    meta = {"graph_spec": stored, "scale": None}
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(stored))
    assert unused_graph(meta, {"graph": str(tmp_path / "same.yaml")}) is None
    assert unused_graph(meta, {"graph": dict(stored)}) is None
    assert unused_graph({}, {"graph": "anything.yaml"}) is None          # an official checkpoint records none
    missing = tmp_path / "moved.yaml"                                    # the checkpoint's graph is built anyway
    assert unused_graph(meta, {"graph": str(missing)}) == f"graph {missing} (unreadable)"
    other = dict(stored, backbone=[[-1, 1, "Conv", [16, 3, 2]]])
    assert unused_graph(meta, {"graph": other}) == "graph"
    assert unused_graph(dict(meta, scale="n"), {"graph": stored, "scale": "s"}) == "graph (scale s; the checkpoint's n)"


def test_a_run_that_stops_during_setup_leaves_no_folder_behind(tmp_path):
    import train
    from tests.engine_helpers import make_data, tiny_config, write_config
    from tests.test_corpus import run_cli

    data = make_data(tmp_path / "data", train=4, val=2)
    cfg = write_config(tiny_config(data, epochs=1), tmp_path / "run.yml")
    argv = ["-c", cfg, "-d", "cpu", "--quiet", "-u", "train_dataloader.total_batch_size=8"]  # > 4 images
    code, text = run_cli(train.main, [*argv, "--output-dir", tmp_path / "new"])
    assert code != 0 and "fewer than one batch" in text
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made is kept, and holds no stale lock
    code, _ = run_cli(train.main, [*argv, "--output-dir", tmp_path / "mine"])
    assert code != 0 and (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_test_only_builds_the_checkpoints_graph_when_the_configs_graph_file_is_gone(trained_run, tmp_path):
    import yaml

    import train
    from tests.test_corpus import run_cli

    cfg = yaml.safe_load(trained_run["config"].read_text())
    cfg["graph"] = str(tmp_path / "moved.yaml")
    config = tmp_path / "run.yml"
    config.write_text(yaml.safe_dump(cfg))
    argv = ["-c", config, "-d", "cpu", "--quiet"]
    code, text = run_cli(train.main, [*argv, "--test-only", "-r", trained_run["checkpoint"], "--output-dir",
                                      tmp_path / "eval"])
    assert code == 0 and f"graph {tmp_path / 'moved.yaml'} (unreadable) differs and is not used" in text
    code, text = run_cli(train.main, [*argv, "--output-dir", tmp_path / "train"])   # training needs the file
    assert code != 0 and "graph file not found" in text and not (tmp_path / "train").exists()
