"""Run-config composition: __include__ order, deep merge, -u overrides, cycles, typos, provenance."""
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_includes_merge_deep_in_order_and_the_including_file_wins(tmp_path):
    write(tmp_path / "base/a.yml", "epochs: 10\noptimizer: {type: AdamW, lr: 0.001, betas: [0.9, 0.999]}\n")
    write(tmp_path / "base/b.yml", "epochs: 20\noptimizer: {lr: 0.002}\nprint_freq: 5\n")
    top = write(tmp_path / "run/top.yml", "__include__: ['../base/a.yml', '../base/b.yml']\noptimizer: {weight_decay: 0.1}\n")
    cfg = load_config(top)
    assert cfg["epochs"] == 20                      # b after a
    assert cfg["optimizer"] == {"type": "AdamW", "lr": 0.002, "betas": [0.9, 0.999], "weight_decay": 0.1}
    assert cfg["print_freq"] == 5
    assert "__include__" not in cfg


def test_nested_includes_resolve_relative_to_each_file(tmp_path):
    write(tmp_path / "x/deep/leaf.yml", "nc: 7\n")
    write(tmp_path / "x/mid.yml", "__include__: deep/leaf.yml\nimgsz: 320\n")
    top = write(tmp_path / "top.yml", "__include__: [x/mid.yml]\n")
    assert load_config(top) == {"nc": 7, "imgsz": 320}


def test_updates_parse_yaml_values_and_create_missing_sections(tmp_path):
    top = write(tmp_path / "c.yml", "train_dataloader: {batch_size: 4, shuffle: true}\n")
    cfg = load_config(top, ["train_dataloader.batch_size=8", "imgsz=[320, 320]", "use_amp=false",
                            "optimizer.lr=1e-4", "output_dir=runs/x=y"])
    assert cfg["train_dataloader"] == {"batch_size": 8, "shuffle": True}
    assert cfg["imgsz"] == [320, 320] and cfg["use_amp"] is False
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-4)
    assert cfg["output_dir"] == "runs/x=y"        # only the first '=' splits


def test_include_cycle_is_reported_with_the_chain(tmp_path):
    write(tmp_path / "a.yml", "__include__: [b.yml]\n")
    write(tmp_path / "b.yml", "__include__: [a.yml]\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a\.yml -> .*b\.yml -> .*a\.yml"):
        load_config(tmp_path / "a.yml")


def test_missing_include_names_the_including_file(tmp_path):
    top = write(tmp_path / "top.yml", "__include__: [nope.yml]\n")
    with pytest.raises(ConfigError, match="included file not found: nope.yml") as err:
        load_config(top)
    assert "top.yml" in err.value.where


def test_official_spellings_are_read_under_our_names_in_the_order_written(tmp_path, capsys):
    base = write(tmp_path / "base.yml", "epoches: 72\nlrsheduler: flatcosine\nlr_gamma: 0.5\n")
    top = write(tmp_path / "top.yml", "__include__: [base.yml]\nepochs: 80\n")
    cfg = load_config(top, ["num_classes=4"])
    assert cfg["epochs"] == 80                           # ours, written later, wins over the included official key
    assert cfg["lr_scheduler"] == {"type": "FlatCosine", "lr_gamma": 0.5} and cfg["nc"] == 4
    assert load_config(top, ["epoches=62"])["epochs"] == 62   # -u comes last
    printed = capsys.readouterr().out
    assert "official key `epoches` read as `epochs`" in printed and "`num_classes` read as `nc`" in printed


def test_official_named_sections_and_network_sections(tmp_path):
    top = write(tmp_path / "top.yml", "criterion: DEIMCriterion\nDEIMCriterion: {gamma: 1.5}\n"
                                      "HGNetv2: {pretrained: false}\n")
    assert load_config(top)["criterion"] == {"type": "DEIMCriterion", "gamma": 1.5}
    network = write(tmp_path / "net.yml", "HybridEncoder: {hidden_dim: 256}\n")
    with pytest.raises(ConfigError, match="network section `HybridEncoder`") as err:
        load_config(network)
    assert "HybridEncoder row" in err.value.hint
    with pytest.raises(ConfigError, match="HybridEncoder"):
        load_config(write(tmp_path / "ok.yml", "epochs: 2\n"), ["HybridEncoder.hidden_dim=256"])


@pytest.mark.parametrize("override, where, hint", [
    ("clip_max_nrom=0.1", "clip_max_nrom", "did you mean `clip_max_norm`"),
    ("train_dataloader.total_batch_szie=8", "train_dataloader.total_batch_szie", "did you mean `total_batch_size`"),
    ("ema.decai=0.9", "ema.decai", "did you mean `decay`"),
    ("lr_scheduler.warmup_iters=10", "lr_scheduler.warmup_iters", "did you mean `warmup_iter`"),
    ("criterion.matcher.weight_dict=3", "criterion.matcher.weight_dict", "fix the value"),
    ("epochs=abc", "epochs", "fix the value"),
    ("optimizer.lr=-1", "optimizer.lr", "fix the value"),
    ("train_dataloader.num_workers=two", "train_dataloader.num_workers", "fix the value"),
])
def test_typos_and_wrong_types_anywhere_name_the_key(override, where, hint):
    from engine.config import resolve

    cfg = load_config(REPO / "configs/demo.yml", [override])
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    assert err.value.where == where and hint in err.value.hint


def test_typed_errors_say_what_was_expected():
    from engine.config import resolve

    with pytest.raises(ConfigError, match=r"epochs: must be an integer \(> 0\), got 'abc'"):
        resolve(load_config(REPO / "configs/demo.yml", ["epochs=abc"]))
    with pytest.raises(ConfigError, match=r"RandomIoUCrop.p must be a number \(>= 0.0, <= 1.0\), got 2"):
        resolve(load_config(REPO / "configs/demo.yml", ["val_dataloader.dataset.transforms.ops=[{type: RandomIoUCrop, p: 2}]"]))
    with pytest.raises(ConfigError, match=r"imgsz: .*got 320000"):
        resolve(load_config(REPO / "configs/demo.yml", ["imgsz=320000"]))


def test_override_through_a_scalar_is_an_error(tmp_path):
    top = write(tmp_path / "c.yml", "epochs: 3\n")
    with pytest.raises(ConfigError, match="epochs is 'int' 3, not a mapping"):
        load_config(top, ["epochs.x=1"])


def test_sources_name_the_file_or_override_each_value_came_from(tmp_path):
    base = write(tmp_path / "base.yml", "optimizer: {lr: 0.1, type: AdamW}\nepochs: 3\n")
    top = write(tmp_path / "top.yml", "__include__: [base.yml]\noptimizer: {lr: 0.2}\n")
    cfg, sources = load_config(top, ["epochs=9"], with_sources=True)
    assert sources["optimizer.lr"] == str(top.resolve())
    assert sources["optimizer.type"] == str(base.resolve())
    assert sources["epochs"] == "-u epochs=9"
    assert cfg["epochs"] == 9


def test_analyze_config_cli_prints_merged_values_with_origins(tmp_path):
    write(tmp_path / "base.yml", "epochs: 3\n")
    top = write(tmp_path / "top.yml", "__include__: [base.yml]\nnc: 2\n")
    out = subprocess.run([sys.executable, "-m", "analyze.config", "-c", str(top), "-u", "nc=5"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith("#")}
    assert "5" in lines["nc:"] and "-u nc=5" in lines["nc:"]
    assert "base.yml" in lines["epochs:"]


@pytest.mark.parametrize("recipe", ["deim", "dfine", "deimv2", "rtdetrv2", "rtdetrv4", "../demo"])
def test_recipes_compose_and_their_criterion_and_optimizer_build(recipe):
    from engine.optim import build_optimizer
    from models import build_model
    from models.criterion import build_criterion

    from engine.config import resolve

    demo = load_config(REPO / "configs/demo.yml")
    cfg = resolve({**load_config(REPO / f"configs/recipes/{recipe}.yml"),
                   **{k: demo[k] for k in ("train_dataloader", "val_dataloader")}})
    criterion = dict(cfg["criterion"], num_classes=3)
    build_criterion(criterion)
    optimizer = build_optimizer(build_model(REPO / "graphs/examples/tiny.yaml", check=False), cfg["optimizer"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 15     # tiny.yaml's parameters, each once
    assert cfg["ema"]["decay"] > 0.99 and cfg["criterion"]["matcher"]["type"] == "HungarianMatcher"
