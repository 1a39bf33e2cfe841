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


def test_a_config_copied_out_of_the_checkout_finds_its_configs_and_graphs_paths_there(tmp_path, monkeypatch):
    """configs/... and graphs/... paths missing from the current folder and beside the file name the
    checkout's files, as on the `detrzoo` command line; a file of the user's own under that name wins."""
    import yaml

    from engine.config import resolve

    monkeypatch.chdir(tmp_path)
    top = write(tmp_path / "project/run.yml",
                "__include__: [configs/recipes/deim.yml, configs/data/demo.yml]\ngraph: graphs/deim/deim-n.yaml\n")
    recipe = yaml.safe_load((REPO / "configs/recipes/deim.yml").read_text())
    cfg = load_config(top)
    assert cfg["graph"] == str(REPO / "graphs/deim/deim-n.yaml")
    assert cfg["criterion"]["type"] == recipe["criterion"]["type"]
    assert resolve(load_config(top, ["graph=graphs/deim/deim-s.yaml"]), config_path=top)["graph"] == str(
        REPO / "graphs/deim/deim-s.yaml")
    write(tmp_path / "project/configs/recipes/deim.yml", "epochs: 3\n")   # the user's own copy beside it
    assert load_config(top)["epochs"] == 3 and "criterion" not in load_config(top)
    with pytest.raises(ConfigError, match="included file not found: recipes/deim.yml") as err:
        load_config(write(tmp_path / "other.yml", "__include__: [recipes/deim.yml]\n"))  # not a checkout path
    assert f"graphs/ or configs/ paths may name the checkout's ({REPO})" in err.value.hint


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


@pytest.mark.parametrize("update, message", [
    ("optimizer.lr=.inf", r"optimizer.lr: must be a number \(> 0\), got inf"),     # trains to NaN otherwise
    ("optimizer.params=[{params: x, lr: .nan}]", r"optimizer.params\[0\].lr: .*got nan"),
    ("optimizer.betas=[0.9]", r"optimizer.betas: must be a list of 2 \(a number, a number\).*got \[0.9\]"),
    ("train_dataloader.collate_fn.mixup_prob=1.5", r"mixup_prob must be a number \(>= 0.0, <= 1.0\), got 1.5"),
    ("train_dataloader.collate_fn.base_size_repeat=-1", r"base_size_repeat must be an integer \(>= 0\)"),
    ("postprocessor.num_top_queries=0", r"num_top_queries must be an integer \(> 0\), got 0"),   # no detections
])
def test_out_of_range_values_are_named_errors(update, message):
    from engine.config import resolve

    with pytest.raises(ConfigError, match=message):
        resolve(load_config(REPO / "configs/demo.yml", [update]))


@pytest.mark.parametrize("update, message", [
    ("epochs=true", r"epochs: must be an integer \(> 0\), not true/false, got True"),  # not one epoch
    ("optimizer.lr=false", r"optimizer.lr: must be a number .*got False"),
    ("imgsz=[true, 320]", r"imgsz: .*got \[True, 320\]"),
    ("train_dataloader.dataset.cache_imgsz=true", r"CocoDetection.cache_imgsz must be an integer \(> 0\), got True"),
])
def test_true_or_false_where_a_number_belongs_is_an_error_not_one_or_zero(update, message):
    from engine.config import resolve

    with pytest.raises(ConfigError, match=message):
        resolve(load_config(REPO / "configs/demo.yml", [update]))
    resolve(load_config(REPO / "configs/demo.yml", ["use_amp=true"]))  # a bool key still takes one


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


def test_analyze_config_names_file_and_line_override_or_rule_of_every_value(tmp_path):
    from analyze.config import explain

    top = write(tmp_path / "top.yml", f"__include__: [{REPO / 'configs/demo.yml'}]\n"
                                      "epoches: 30\n"                    # line 2, the official spelling
                                      "criterion: DEIMCriterion\n"       # line 3: official named section
                                      "DEIMCriterion:\n"
                                      "  alpha: 0.5\n")                  # line 5
    _, rows, reason = explain(str(top), ["seed=7"])
    origin = {key: where for key, _, where in rows}
    assert reason is None
    assert origin["epochs"] == f"{top}:2"
    assert origin["criterion.type"] == f"{top}:3" and origin["criterion.alpha"] == f"{top}:5"
    assert origin["seed"] == "-u seed=7"
    assert origin["flat_epoch"] == origin["train_dataloader.collate_fn.stop_epoch"] == \
        "derived: from epochs 30 (engine.config.derive_epochs)"
    assert origin["val_dataloader.dataset.transforms.ops[0].size"] == "derived: from imgsz [128, 128]"
    demo_lines = (REPO / "configs/demo.yml").read_text().splitlines()
    path, line = origin["output_dir"].rsplit(":", 1)                   # from the included file, at its line
    assert Path(path).resolve() == (REPO / "configs/demo.yml").resolve() and demo_lines[int(line) - 1].startswith("output_dir:")
    path, line = origin["train_dataloader.dataset.transforms.ops[2].type"].rsplit(":", 1)
    assert "Resize" in demo_lines[int(line) - 1]
    assert origin["progress_bar"] == "default"
    assert all(where for where in origin.values())


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


# ------------------------------------------------------------ the official vocabulary (engine/vocabulary.py)
RTDETRV2_SCALES = "[480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]"
# every official key of recipes.md's table (b) that means something here: (the key in a file, the same
# as one -u override, what it is read as, the line printed)
OFFICIAL_READ = [
    ("epoches: 72", "epoches=72", {"epochs": 72}, "`epoches` read as `epochs`"),
    ("num_classes: 4", "num_classes=4", {"nc": 4}, "`num_classes` read as `nc`"),
    ("eval_spatial_size: [320, 320]", "eval_spatial_size=[320,320]", {"imgsz": [320, 320]}, "read as `imgsz`"),
    ("lr_gamma: 0.5", "lr_gamma=0.5", {"lr_scheduler.lr_gamma": 0.5}, "read as `lr_scheduler.lr_gamma`"),
    ("warmup_iter: 100", "warmup_iter=100", {"lr_scheduler.warmup_iter": 100}, "read as `lr_scheduler.warmup_iter`"),
    ("use_focal_loss: true", "use_focal_loss=True",
     {"postprocessor.use_focal_loss": True, "criterion.matcher.use_focal_loss": True}, "`use_focal_loss` read as"),
    ("lrsheduler: flatcosine", "lrsheduler=flatcosine", {"lr_scheduler.type": "FlatCosine"}, "read as `lr_scheduler.type: FlatCosine`"),
    # officially any value selects flat-cosine (the name is only printed); ~ selects nothing
    ("lrsheduler: cosine", "lrsheduler=cosine", {"lr_scheduler.type": "FlatCosine"}, "`lrsheduler: cosine` read as"),
    ("lrsheduler: ~", "lrsheduler=~", {"lr_scheduler": "<missing>"}, "`lrsheduler: ~` has no effect"),
    ("remap_mscoco_category: false", "remap_mscoco_category=False",
     {"train_dataloader.dataset.remap_mscoco_category": False, "val_dataloader.dataset.remap_mscoco_category": False},
     "`remap_mscoco_category` read as"),
    (f"train_dataloader: {{collate_fn: {{scales: {RTDETRV2_SCALES}}}}}",
     f"train_dataloader.collate_fn.scales={RTDETRV2_SCALES.replace(' ', '')}",
     {"train_dataloader.collate_fn.base_size": 640, "train_dataloader.collate_fn.base_size_repeat": 3},
     "read as `collate_fn.base_size: 640`, `collate_fn.base_size_repeat: 3`"),
    ("train_dataloader: {collate_fn: {scales: ~}}", "train_dataloader.collate_fn.scales=~",
     {"train_dataloader.collate_fn.base_size_repeat": None}, "`collate_fn.base_size_repeat: ~`"),
    ("criterion: DEIMCriterion\nDEIMCriterion: {gamma: 1.5}", None,
     {"criterion.type": "DEIMCriterion", "criterion.gamma": 1.5}, "section `DEIMCriterion:` read as `criterion:`"),
    ("DEIMCriterion: {matcher: {change_matcher: true}}", "DEIMCriterion.matcher.change_matcher=True",
     {"criterion.matcher.change_matcher": True}, "section `DEIMCriterion:` read as `criterion:`"),
    ("RTDETRCriterionv2: {losses: [vfl, boxes]}", "RTDETRCriterionv2.losses=[vfl,boxes]",
     {"criterion.losses": ["vfl", "boxes"]}, "read as `criterion:`"),
    ("RTv4Criterion: {distill_adaptive_params: {rho: 11}}", "RTv4Criterion.distill_adaptive_params.rho=11",
     {"criterion.distill_adaptive_params.rho": 11}, "read as `criterion:`"),
    ("DFINECriterion: {reg_max: 32}", "DFINECriterion.reg_max=32", {"criterion.reg_max": 32}, "read as `criterion:`"),
    ("postprocessor: DFINEPostProcessor\nDFINEPostProcessor: {num_top_queries: 100}", None,
     {"postprocessor.num_top_queries": 100}, "section `DFINEPostProcessor:` read as `postprocessor:`"),
    ("RTDETRPostProcessor: {num_top_queries: 100}", "RTDETRPostProcessor.num_top_queries=100",
     {"postprocessor.num_top_queries": 100}, "read as `postprocessor:`"),
    ("PostProcessor: {num_top_queries: 100}", "PostProcessor.num_top_queries=100",
     {"postprocessor.num_top_queries": 100}, "read as `postprocessor:`"),
]
# official keys with no effect here: read, one line, dropped
OFFICIAL_NO_EFFECT = [
    ("task: detection", "task=detection"),
    ("evaluator: {type: CocoEvaluator, iou_types: [bbox]}", "evaluator.type=CocoEvaluator"),
    ("scaler: {type: GradScaler, enabled: true}", "scaler.enabled=True"),
    ("model: DEIM", "model=DEIM"),
    ("train_dataloader: {dataset: {return_masks: false}}", "train_dataloader.dataset.return_masks=False"),
    ("val_dataloader: {dataset: {return_masks: false}}", "val_dataloader.dataset.return_masks=False"),
    ("train_dataloader: {collate_fn: {ema_restart_decay: 0.9998}}", "train_dataloader.collate_fn.ema_restart_decay=0.9998"),
    ("use_wandb: false", "use_wandb=False"),
    ("project_name: D-FINE", "project_name=D-FINE"),
    ("exp_name: baseline", "exp_name=baseline"),
    ("ema_decay: 0.9999", "ema_decay=0.9999"),
    ("ema_warmups: 2000", "ema_warmups=2000"),
    ("print_method: builtin", "print_method=builtin"),
    ("print_rank: 0", "print_rank=0"),
    ("local_rank: 0", "local_rank=0"),
    ("HGNetv2: {pretrained: false}", "HGNetv2.pretrained=False"),
    ("PResNet: {pretrained: false, local_model_dir: weights/}", "PResNet.local_model_dir=weights/"),
]
# official keys that mean nothing here: they stop, saying where the setting lives
OFFICIAL_MOVED = [
    ("use_wandb: true", "use_wandb=True", "use_wandb", "TensorBoard"),
    ("resume: last.pth", "resume=last.pth", "resume", "-r CHECKPOINT"),
    ("tuning: w.pth", "tuning=w.pth", "tuning", "-t CHECKPOINT"),
    ("test_only: true", "test_only=True", "test_only", "--test-only"),
    ("config: a.yml", "config=a.yml", "config", "-c"),
    ("HGNetv2: {pretrained: true}", "HGNetv2.pretrained=True", "HGNetv2", "local file"),
    ("HybridEncoder: {hidden_dim: 256}", "HybridEncoder.hidden_dim=256", "HybridEncoder", "HybridEncoder row"),
    ("DFINETransformer: {num_queries: 300}", "DFINETransformer.num_queries=300", "DFINETransformer", "DFINETransformer row"),
    ("DINOv3STAs: {weights_path: vitt.pt}", "DINOv3STAs.weights_path=vitt.pt", "DINOv3STAs", "`weights: PATH`"),
    ("train_dataloader: {collate_fn: {scales: [320, 800]}}", "train_dataloader.collate_fn.scales=[320,800]",
     "scales", "base_size_repeat"),
]
# official keys whose name is ours too: the schemas take them as written
OFFICIAL_SAME = ["train_dataloader.type=DataLoader", "val_dataloader.type=DataLoader",
                 "train_dataloader.dataset.type=CocoDetection", "train_dataloader.dataset.transforms.type=Compose",
                 "train_dataloader.collate_fn.type=BatchImageCollateFunction", "ema.type=ModelEMA",
                 "optimizer.type=AdamW", "lr_warmup_scheduler.type=LinearWarmup", "lr_scheduler.type=MultiStepLR",
                 "criterion.matcher.type=HungarianMatcher", "train_dataloader.total_batch_size=8", "sync_bn=True",
                 "find_unused_parameters=True", "checkpoint_freq=4", "clip_max_norm=0.1", "use_amp=True",
                 "flat_epoch=3", "no_aug_epoch=1", "print_freq=10", "output_dir=outputs/x"]


def dotted(cfg: dict, key: str):
    from engine.config import get

    return get(cfg, key, "<missing>")


@pytest.mark.parametrize("text, override, expected, printed", OFFICIAL_READ, ids=[t[0][:40] for t in OFFICIAL_READ])
def test_official_key_is_read_under_its_name_in_a_file_and_in_an_override(text, override, expected, printed,
                                                                          tmp_path, capsys):
    loaded = [load_config(write(tmp_path / "official.yml", text + "\n"))]
    if override is not None:
        loaded.append(load_config(write(tmp_path / "empty.yml", "epochs: 2\n"), [override]))
    out = capsys.readouterr().out
    for cfg in loaded:
        assert {key: dotted(cfg, key) for key in expected} == expected
    assert out.count(printed) == len(loaded), out


@pytest.mark.parametrize("text, override", OFFICIAL_NO_EFFECT, ids=[t[1] for t in OFFICIAL_NO_EFFECT])
def test_official_key_without_effect_is_reported_and_dropped(text, override, tmp_path, capsys):
    key = override.split("=")[0]
    for cfg in (load_config(write(tmp_path / "official.yml", text + "\n")),
                load_config(write(tmp_path / "empty.yml", "epochs: 2\n"), [override])):
        assert dotted(cfg, key) == "<missing>"
    assert capsys.readouterr().out.count("has no effect here") == 2


@pytest.mark.parametrize("text, override, where, hint", OFFICIAL_MOVED, ids=[t[1] for t in OFFICIAL_MOVED])
def test_official_key_without_a_counterpart_stops_with_where_it_lives(text, override, where, hint, tmp_path):
    for attempt in (lambda: load_config(write(tmp_path / "official.yml", text + "\n")),
                    lambda: load_config(write(tmp_path / "empty.yml", "epochs: 2\n"), [override])):
        with pytest.raises(ConfigError) as err:
            attempt()
        assert where in err.value.where and hint in err.value.hint


def test_official_keys_that_are_ours_too_resolve_as_written(capsys):
    from engine.config import resolve

    cfg = resolve(load_config(REPO / "configs/demo.yml", OFFICIAL_SAME), config_path=REPO / "configs/demo.yml")
    assert cfg["train_dataloader"]["type"] == "DataLoader" and cfg["ema"]["type"] == "ModelEMA"
    assert cfg["train_dataloader"]["dataset"]["transforms"]["type"] == "Compose"
    assert "official key" not in capsys.readouterr().out     # nothing to translate, nothing printed


def test_update_and_u_are_the_same_flag():
    import train

    short, long = train.parse_args(["-c", "x.yml", "-u", "epoches=3"]), train.parse_args(["-c", "x.yml", "--update", "epoches=3"])
    assert short.update == long.update == ["epoches=3"]
