"""Reliability (issue #12): crash-safe checkpoints, numerical faults, a failing DDP rank, and the
security rules (safe YAML, weights-only torch.load, no eval/exec) kept by a scan of the sources.

Tiny graph, tiny data, CPU. The crash tests SIGKILL real processes: forked copies of a trainer in
the middle of `save()` (cheap: no new interpreter), and one `train.py` run killed mid-epoch and
continued with --auto-resume.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import train
from core.checkpoint_io import read_checkpoint
from engine import checkpoint
from engine.config import load_config
from engine.solver import Solver
from tests.engine_helpers import REPO, free_port, make_data, subprocess_env, tiny_config, write_config


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("reliability_demo"), train=4, val=2)


def quiet_solver(cfg_path, **options) -> Solver:
    with contextlib.redirect_stdout(io.StringIO()):
        return Solver(load_config(cfg_path), device="cpu", **options)


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- crash safety
def test_sigkill_during_twenty_checkpoint_saves_never_leaves_a_torn_last_pth(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo, epochs=1), tmp_path / "tiny.yml")
    solver = quiet_solver(cfg_path, output_dir=str(tmp_path / "run"))
    last = solver.output_dir / "last.pth"
    solver.save("last.pth")
    started = time.perf_counter()
    solver.save("last.pth")
    save_seconds = time.perf_counter() - started
    rng = random.Random(0)
    for kill in range(20):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child saves epoch after epoch, announcing each save, until it is killed
            os.close(read_end)
            try:
                for epoch in range(10 ** 6):
                    solver.epoch = epoch
                    os.write(write_end, b".")
                    solver.save("last.pth")
            finally:
                os._exit(0)
        os.close(write_end)
        saves = rng.randint(1, 3)
        assert len(os.read(read_end, saves)) >= 1                   # a save has begun
        time.sleep(rng.uniform(0.0, 1.5 * save_seconds))            # somewhere inside it (or the next)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        state = read_checkpoint(last)                              # whole, whatever the moment
        assert isinstance(state["epoch"], int) and weights_equal(state["model"], solver.raw_model.state_dict())
    solver.close()  # a solver holds its folder until closed (fit and test close it)
    resumed = quiet_solver(cfg_path, output_dir=str(solver.output_dir), resume=str(last))
    assert resumed.epoch == read_checkpoint(last)["epoch"] and resumed.output_dir == solver.output_dir


@pytest.mark.slow
def test_auto_resume_after_sigkill_equals_the_uninterrupted_run(demo, tmp_path):
    cfg_path = write_config(tiny_config(demo, epochs=4), tmp_path / "tiny.yml")
    straight = quiet_solver(cfg_path, output_dir=str(tmp_path / "straight"))
    with contextlib.redirect_stdout(io.StringIO()):
        straight.fit()
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "train.py", "-c", str(cfg_path), "-d", "cpu", "--output-dir", str(out)],
                               cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "last.pth").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)                            # during epoch 1: epoch 0 is saved
    assert process.wait(60) == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    completed = read_checkpoint(out / "last.pth")["epoch"]
    assert completed < 3                                            # killed before the end
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = train.main(["-c", str(cfg_path), "-d", "cpu", "--output-dir", str(out), "--auto-resume"])
    assert code is not None and f"continuing at epoch {completed + 1}" in printed.getvalue()
    a, b = read_checkpoint(tmp_path / "straight" / "last.pth"), read_checkpoint(out / "last.pth")
    assert weights_equal(a["model"], b["model"]) and weights_equal(a["ema"]["module"], b["ema"]["module"])
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"]
    assert a["stats"]["stats"] == b["stats"]["stats"]
    logged = [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()]
    assert logged[-(3 - completed):] == list(range(completed + 1, 4))


# --------------------------------------------------------------------------------- numerical faults
@pytest.fixture
def step_solver(demo, tmp_path):
    """A tiny solver and one training batch."""
    solver = quiet_solver(write_config(tiny_config(demo, epochs=1), tmp_path / "tiny.yml"),
                          output_dir=str(tmp_path / "run"))
    solver.schedule.set(10, 0)                                       # past the warm-up: lr > 0
    assert min(group["lr"] for group in solver.optimizer.param_groups) > 0
    images, targets = next(iter(solver.train_loader))
    return solver, images, targets


def params_of(solver) -> dict:
    """Parameters and buffers (BatchNorm statistics)."""
    return {k: v.detach().clone() for k, v in solver.raw_model.state_dict().items()}


def parameters_of(solver) -> dict:
    return {k: v.detach().clone() for k, v in solver.raw_model.named_parameters()}


class ScaledLoss(torch.nn.Module):
    """Multiplies one loss term by `factor` (inf, nan) on the next call only."""

    def __init__(self, criterion, factor):
        super().__init__()
        self.criterion, self.factor = criterion, factor

    def forward(self, outputs, targets, epoch=0):
        losses = self.criterion(outputs, targets, epoch=epoch)
        if self.factor is not None:
            losses["loss_bbox"] = losses["loss_bbox"] * self.factor
            self.factor = None
        return losses


def poison_gradient(solver, value: float):
    """One parameter's gradient becomes `value` on the next backward only."""
    weight = next(p for p in solver.raw_model.parameters() if p.requires_grad)
    handle = None

    def hook(grad):
        handle.remove()
        return torch.full_like(grad, value)
    handle = weight.register_hook(hook)


@pytest.mark.parametrize("fault", ["nan_input", "inf_input", "inf_loss", "nan_gradient", "inf_gradient"])
def test_non_finite_input_loss_or_gradient_skips_the_step_and_the_next_one_trains(step_solver, fault):
    solver, images, targets = step_solver
    if fault == "nan_input":
        images = images.clone()
        images[0, :, :8, :8] = float("nan")
    elif fault == "inf_input":
        images = images.clone()
        images[1, 0, 0, 0] = float("inf")
    elif fault == "inf_loss":
        solver.criterion = ScaledLoss(solver.criterion, float("inf"))
    else:
        poison_gradient(solver, float("nan") if fault == "nan_gradient" else float("inf"))
    before = params_of(solver)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert solver.train_step(images, targets, 0, 0) is None
    what = "gradients" if fault.endswith("gradient") else "loss or predicted boxes"
    assert f"non-finite {what} at epoch 0 step 0" in printed.getvalue()
    assert solver.bad_total == 1 and weights_equal(params_of(solver), before)  # BatchNorm statistics too
    assert not solver.optimizer.state                                # the optimizer never stepped
    images, targets = next(iter(solver.train_loader))
    before = parameters_of(solver)
    with contextlib.redirect_stdout(io.StringIO()):
        terms = solver.train_step(images, targets, 0, 1)
    assert terms is not None and all(map(torch.isfinite, map(torch.tensor, terms.values())))
    assert solver.bad_in_row == 0 and not weights_equal(parameters_of(solver), before)


def test_fp16_overflow_under_amp_is_recovered_by_the_grad_scaler(step_solver):
    solver, images, targets = step_solver
    # CPU autocast runs float16 here; the trainer picks bf16 on CPU, so fp16 is forced as on older GPUs.
    # A loss scale of 2^24 overflows the fp16 gradients: the scaler must skip and halve until they fit.
    solver.use_amp, solver.amp_dtype = True, torch.float16
    solver.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    before = parameters_of(solver)
    scales = []
    for index in range(16):
        assert solver.train_step(images, targets, 0, index) is not None
        scales.append(solver.scaler.get_scale())
        if not weights_equal(parameters_of(solver), before):
            break
    assert scales[0] == 2.0 ** 23                                     # the first step overflowed and was skipped
    assert not weights_equal(parameters_of(solver), before)          # ... and training recovered
    assert scales == [2.0 ** (23 - i) for i in range(len(scales) - 1)] + [scales[-2]] and len(scales) > 1
    assert solver.bad_total == 0                                      # the scaler's business, not the guard's
    assert all(torch.isfinite(v).all() for v in parameters_of(solver).values())


def test_a_run_with_only_negatives_trains(demo, tmp_path):
    ann = json.loads((demo / "train" / "_annotations.coco.json").read_text())
    ann["annotations"] = []
    negatives = tmp_path / "negatives.json"
    negatives.write_text(json.dumps(ann))
    cfg = tiny_config(demo, epochs=1)
    cfg["train_dataloader"]["dataset"]["ann_file"] = str(negatives)
    cfg["train_dataloader"]["total_batch_size"] = 2                  # two steps: the 2nd is past lr 0 of warm-up
    solver = quiet_solver(write_config(cfg, tmp_path / "neg.yml"), output_dir=str(tmp_path / "run"))
    before = parameters_of(solver)
    with contextlib.redirect_stdout(io.StringIO()):
        solver.fit()
    assert solver.global_step == 2 and solver.bad_total == 0
    assert not weights_equal(parameters_of(solver), before)
    assert all(torch.isfinite(v).all() for v in params_of(solver).values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------- DDP fault
@pytest.mark.slow
def test_a_rank_that_raises_stops_every_rank_with_its_message(demo, tmp_path):
    """Rank 1 reads the odd-numbered images (no shuffle); they are undecodable. Rank 0 would wait
    in DDP's gradient all-reduce forever; torchrun must stop it and the message must show."""
    data, train_dir = tmp_path / "data", tmp_path / "data" / "train"
    train_dir.mkdir(parents=True)
    (data / "val").symlink_to(demo / "val")
    ann = json.loads((demo / "train" / "_annotations.coco.json").read_text())
    (train_dir / "_annotations.coco.json").write_text(json.dumps(ann))
    for index, image in enumerate(ann["images"]):
        content = (demo / "train" / image["file_name"]).read_bytes()
        (train_dir / image["file_name"]).write_bytes(content[: len(content) // 2] if index % 2 else content)
    cfg = tiny_config(data, epochs=1)
    cfg["train_dataloader"]["shuffle"] = False
    cfg_path = write_config(cfg, tmp_path / "ddp.yml")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", "--monitor-interval=0.5", "train.py", "-c", str(cfg_path),
                           "-d", "cpu", "--output-dir", str(tmp_path / "out")],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "image cannot be decoded" in text and "000002.jpg" in text, text[-3000:]
    assert not (tmp_path / "out" / "last.pth").exists()


# -------------------------------------------------------------------------------------------- security
SOURCES = sorted(p for p in REPO.rglob("*.py")
                 if not any(part.startswith(".") or part in ("tests", "build") for part in p.relative_to(REPO).parts))
# (file, enclosing function): why the call is allowed
ALLOWED = {
    ("engine/checkpoint.py", "resave_trusted", "torch.load"): "the explicit --trust path for a file the user vouches for",
    ("blocks/registry.py", "import_all_blocks", "importlib.import_module"): "imports the block files found in blocks/, never a config value",
    ("engine/onnx_export.py", "require", "__import__"): "optional exporters named in the code (onnx, onnxslim)",
    ("bench/vs_official.py", "import_official", "importlib.import_module"):
        "the official package of the checkout the benchmark was pointed at, by its fixed package names",
}


def calls(path: Path):
    """(dotted callee, call node, enclosing function name) for every call in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            scope = node
            while scope in parents and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents[scope]
            yield name, node, getattr(scope, "name", "")


def keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def test_sources_load_yaml_safely_torch_weights_only_and_never_eval():
    assert len(SOURCES) > 50
    problems = []
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        for name, node, function in calls(path):
            where = f"{rel}:{node.lineno} {name}"
            if (rel, function, name) in ALLOWED:
                continue
            if name in ("eval", "exec", "compile", "__import__", "importlib.import_module", "pickle.load",
                        "pickle.loads", "marshal.loads", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                problems.append(where)
            elif name == "torch.load":
                flag = keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where} without weights_only=True")
            elif name == "yaml.load":
                loader = keyword(node, "Loader")
                module = importlib.import_module(rel[:-3].replace("/", "."))
                resolved = eval_loader(loader, module)
                if not (isinstance(resolved, type) and issubclass(resolved, yaml.SafeLoader)):
                    problems.append(f"{where} with a loader that is not a SafeLoader")
            elif name == "np.load" and isinstance(keyword(node, "allow_pickle"), ast.Constant) \
                    and keyword(node, "allow_pickle").value:
                problems.append(f"{where} with allow_pickle=True")
    assert not problems, "\n".join(problems)


def eval_loader(node, module):
    """The class a `Loader=` argument names (a module attribute or yaml.X), without evaluating code."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None)
    if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "yaml":
        return getattr(yaml, node.attr, None)
    return None


def test_graph_module_names_resolve_only_through_the_registry_or_torch_nn(tmp_path):
    from models import build_model
    from core.errors import GraphError

    for name in ("os.system", "builtins.eval", "__import__", "subprocess.Popen", "nn.functional.relu",
                 "torch.load", "nn.Module.__subclasses__", "nn.modules.conv"):
        graph = {"backbone": [[-1, 1, name, ["echo unsafe"]]]}
        with pytest.raises(GraphError, match="unknown module|torch.nn has no module"):
            build_model(graph)
