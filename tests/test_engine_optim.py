"""Optimizer groups by qualified name, learning-rate schedules, linear lr scaling, EMA."""
import copy
import math

import pytest
import torch

from engine.ema import ModelEMA
from engine.optim import LRSchedule, build_optimizer, flat_cosine, param_groups
from models import build_model
from core.errors import ConfigError

# The official DEIM-N groups (configs/deim_dfine/deim_hgnetv2_n_coco.yml).
DEIM_N_GROUPS = [
    {"params": "^(?=.*backbone)(?!.*norm|bn).*$", "lr": 0.0004},
    {"params": "^(?=.*backbone)(?=.*norm|bn).*$", "lr": 0.0004, "weight_decay": 0.0},
    {"params": "^(?=.*(?:encoder|decoder))(?=.*(?:norm|bn|bias)).*$", "weight_decay": 0.0},
]


@pytest.fixture
def tiny():
    return build_model("graphs/examples/tiny.yaml", check=False)


def names_of(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(name for name, p in model.named_parameters() if id(p) in ids)


def test_official_regexes_split_by_section_and_claim_each_parameter_once(tiny):
    groups = param_groups(tiny, {"params": DEIM_N_GROUPS})
    by_name = {g["name"]: names_of(tiny, g) for g in groups}
    # tiny.yaml: rows 0-2 backbone (conv+BN), row 5 encoder (conv+BN)
    assert by_name["group0"] == ["layers.0.conv.weight", "layers.1.conv.weight", "layers.2.0.conv.weight",
                                 "layers.2.1.conv.weight"]
    assert len(by_name["group1"]) == 8 and all(".norm." in n and not n.startswith("layers.5") for n in by_name["group1"])
    assert by_name["group2"] == ["layers.5.norm.bias", "layers.5.norm.weight"]
    assert by_name["default"] == ["layers.5.conv.weight"]      # the official remainder group
    claimed = [n for names in by_name.values() for n in names]
    assert sorted(claimed) == sorted(n for n, _ in tiny.named_parameters())


def test_parameter_claimed_by_two_groups_is_named(tiny):
    with pytest.raises(ConfigError, match=r"backbone\.layers\.0\.norm\.weight is claimed by group 0 and group 1"):
        param_groups(tiny, {"params": [{"params": "backbone"}, {"params": "norm"}]})


def test_unclaimed_parameter_is_an_error_when_every_group_must_be_explicit(tiny):
    with pytest.raises(ConfigError, match=r"claimed by no group, e\.g\. encoder\.layers\.5\.conv\.weight"):
        param_groups(tiny, {"params": [{"params": "backbone"}, {"params": "encoder.*norm"}], "rest": "error"})


def test_frozen_parameters_are_left_out(tiny):
    for p in tiny.layers[0].parameters():
        p.requires_grad_(False)
    groups = param_groups(tiny, {"params": [{"params": "backbone"}], "rest": "default"})
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in tiny.parameters() if p.requires_grad) == 12


def test_optimizer_gets_group_settings_and_top_level_defaults(tiny):
    opt = build_optimizer(tiny, {"type": "AdamW", "lr": 0.0008, "betas": [0.9, 0.999], "weight_decay": 0.0001,
                                 "params": DEIM_N_GROUPS})
    settings = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    assert settings == [(0.0004, 0.0001, 4), (0.0004, 0.0, 8), (0.0008, 0.0, 2), (0.0008, 0.0001, 1)]


def test_flat_cosine_matches_hand_values():
    # total 100 iters, warm-up 10, flat until 40, last 20 at the minimum
    args = dict(total=100, warmup=10, flat=40, no_aug=20, base=1.0, minimum=0.5)
    assert flat_cosine(5, **args) == pytest.approx(0.25)          # (5/10)^2
    assert flat_cosine(10, **args) == pytest.approx(1.0)
    assert flat_cosine(40, **args) == pytest.approx(1.0)
    assert flat_cosine(60, **args) == pytest.approx(0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert flat_cosine(80, **args) == pytest.approx(0.5)
    assert flat_cosine(99, **args) == pytest.approx(0.5)


def test_schedules_set_every_group_from_step_and_epoch(tiny):
    opt = build_optimizer(tiny, {"type": "AdamW", "lr": 0.01, "params": [{"params": "backbone", "lr": 0.001}]})
    multistep = LRSchedule(opt, {"type": "MultiStepLR", "milestones": [2, 4], "gamma": 0.1},
                           {"type": "LinearWarmup", "warmup_duration": 4}, iters_per_epoch=10, epochs=6)
    multistep.set(step=1, epoch=0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001 * 2 / 4, 0.01 * 2 / 4])
    multistep.set(step=45, epoch=4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001 * 0.01, 0.01 * 0.01])
    cosine = LRSchedule(opt, {"type": "FlatCosine", "lr_gamma": 0.5, "warmup_iter": 10}, None, iters_per_epoch=10,
                        epochs=10, flat_epoch=4, no_aug_epoch=2)
    cosine.set(step=95, epoch=9)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0005, 0.005])
    with pytest.raises(ConfigError, match="lr_scheduler.type: must be one of 'MultiStepLR', 'FlatCosine'"):
        LRSchedule(opt, {"type": "Cosine"}, None, 10, 10)


def test_linear_lr_scaling_with_total_batch():
    from pathlib import Path

    from engine.config import load_config, resolve

    demo = Path(__file__).resolve().parents[1] / "configs/demo.yml"   # total batch 8
    cfg = load_config(demo, ["scale_lr_with_batch={base_batch_size: 32}", "optimizer.lr=0.0008",
                             "optimizer.params=[{params: backbone, lr: 0.0004}, {params: x}]"])
    resolved, rules = resolve(cfg, explain=True)
    assert resolved["optimizer"]["lr"] == pytest.approx(0.0002)
    assert resolved["optimizer"]["params"][0]["lr"] == pytest.approx(0.0001)
    assert "lr" not in resolved["optimizer"]["params"][1]
    assert cfg["optimizer"]["lr"] == 0.0008 and "x 0.25" in rules["optimizer.lr"]   # the input is left alone
    with pytest.raises(ConfigError, match="total_batch_size 8 is not divisible by 3"):
        resolve(cfg, world_size=3)


def test_ema_follows_the_warmed_up_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.constant_(model.weight, 1.0)
    ema = ModelEMA(model, decay=0.9, warmups=2)
    torch.nn.init.constant_(model.weight, 3.0)
    ema.update(model)
    d1 = 0.9 * (1 - math.exp(-1 / 2))
    expected = d1 * 1.0 + (1 - d1) * 3.0
    assert torch.allclose(ema.module.weight, torch.full((1, 2), expected))
    ema.update(model)
    d2 = 0.9 * (1 - math.exp(-2 / 2))
    assert torch.allclose(ema.module.weight, torch.full((1, 2), d2 * expected + (1 - d2) * 3.0))
    restored = ModelEMA(model, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 2 and restored.decay == 0.9


@pytest.mark.parametrize("kind", ["AdamW", "SGD"])
def test_fused_and_foreach_updates_equal_the_per_parameter_loop(tiny, kind):
    # auto picks the fused kernel on the CPU; 20 steps of the same gradients give the loop's weights
    # to float rounding (the kernels reorder the arithmetic, nothing else)
    cfg = {"type": kind, "lr": 0.01, "weight_decay": 0.01, "params": [{"params": "backbone", "lr": 0.002}],
           **({"momentum": 0.9} if kind == "SGD" else {})}
    models = {impl: copy.deepcopy(tiny) for impl in ("loop", "foreach", "auto")}
    optimizers = {impl: build_optimizer(m, {**cfg, "implementation": impl}) for impl, m in models.items()}
    assert optimizers["auto"].defaults["fused"] and not optimizers["loop"].defaults["foreach"]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=generator) for p in tiny.parameters()]
        for impl, model in models.items():
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizers[impl].step()
    reference = list(models["loop"].parameters())
    for impl in ("foreach", "auto"):
        for p, q in zip(models[impl].parameters(), reference):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(tiny.parameters(), reference))  # the steps did move them


def test_a_group_that_claims_nothing_is_reported(tiny, capsys):
    groups = param_groups(tiny, {"params": [{"params": "^bakbone", "lr": 0.1}]})   # the typo claims nothing
    assert [g["name"] for g in groups] == ["default"]
    out = capsys.readouterr().out
    assert "optimizer.params[0] ('^bakbone') matches no trainable parameter" in out and "backbone.layers.0" in out


def test_a_setting_the_optimizer_does_not_take_is_named(tiny):
    """A recipe's AdamW betas under type: SGD, at the top or in a group."""
    with pytest.raises(ConfigError, match="SGD takes no betas") as err:
        build_optimizer(tiny, {"type": "SGD", "lr": 0.1, "betas": [0.9, 0.999]})
    assert err.value.where == "optimizer.betas" and "-u optimizer.betas=~" in err.value.hint
    with pytest.raises(ConfigError, match="SGD takes no betas") as err:
        build_optimizer(tiny, {"type": "SGD", "lr": 0.1, "params": [{"params": "norm", "betas": [0.9, 0.99]}]})
    assert err.value.where == "optimizer.params[0].betas"
