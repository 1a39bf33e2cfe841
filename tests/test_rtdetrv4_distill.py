"""RT-DETRv4's foundation teacher: a DINOv3 ViT built from Meta-layout weights, its patch tokens teaching
the graph's own projector through the criterion's loss_distill, the adaptive weight, DDP.

Pinned figures were recorded outside the repo with the official code on the weights this file makes:
Meta's DINOv3 (facebookresearch/dinov3 6876159, its `dinov3_vitb16` hub entry with embed_dim 32,
depth 2, num_heads 2 and every other setting kept) loaded through RT-DETRv4's DINOv3TeacherModel
(RT-DETRs/RT-DETRv4 df44122), and RT-DETRv4's RTv4Criterion (losses [distill], loss_distill 5) on
the same tensors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.errors import ConfigError
from engine.config import load_config
from engine.distill import ViTTeacher, adapted_weight
from engine.solver import Solver
from models.criterion import build_criterion
from tests.engine_helpers import REPO, free_port, make_data, subprocess_env, tiny_config, write_config

WIDTH, HEADS, DEPTH = 32, 2, 2
TINY_VIT = {"embed_dim": WIDTH, "num_heads": HEADS, "depth": DEPTH}
# the official teacher map [2, 32, 4, 4] of images torch.rand(2, 3, 128, 128, generator=seed 1)
OFFICIAL_MAP = {"sum": 0.8805842399597168, "abs": 841.165283203125, "square": 1056.10791015625,
                "first": [-1.5080361366271973, 2.5092804431915283, -1.656296968460083, -0.37268421053886414],
                "last": -0.9311103820800781}
OFFICIAL_LOSS_DISTILL = 1.9676209688186646


def meta_layout(width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS) -> dict[str, tuple]:
    """Meta's DINOv3 ViT state-dict names and shapes (ViT-B/16's layout at another width and depth)."""
    names = {"cls_token": (1, 1, width), "storage_tokens": (1, 4, width), "mask_token": (1, width),
             "patch_embed.proj.weight": (width, 3, 16, 16), "patch_embed.proj.bias": (width,),
             "rope_embed.periods": (width // heads // 4,), "norm.weight": (width,), "norm.bias": (width,)}
    for i in range(depth):
        block = {"norm1.weight": (width,), "norm1.bias": (width,), "attn.qkv.weight": (3 * width, width),
                 "attn.qkv.bias": (3 * width,), "attn.qkv.bias_mask": (3 * width,), "attn.proj.weight": (width, width),
                 "attn.proj.bias": (width,), "ls1.gamma": (width,), "norm2.weight": (width,), "norm2.bias": (width,),
                 "mlp.fc1.weight": (4 * width, width), "mlp.fc1.bias": (4 * width,),
                 "mlp.fc2.weight": (width, 4 * width), "mlp.fc2.bias": (width,), "ls2.gamma": (width,)}
        names.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    return names


def meta_weights(path) -> str:
    """Deterministic Meta-layout weights (one seeded generator, sorted names); buffers as DINOv3 sets them."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in sorted(meta_layout().items()):
        if key.endswith("bias_mask"):   # DINOv3's masked key bias: the middle third is 0
            value = torch.ones(shape)
            value[shape[0] // 3: 2 * shape[0] // 3] = 0
        elif key == "rope_embed.periods":
            value = 100.0 ** (2 * torch.arange(shape[0], dtype=torch.float32) / (2 * shape[0]))
        elif key.endswith(("norm1.weight", "norm2.weight")) or key == "norm.weight":
            value = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif key.endswith("gamma"):
            value = 0.5 + 0.1 * torch.randn(shape, generator=generator)
        else:
            value = 0.2 * torch.randn(shape, generator=generator)
        state[key] = value
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    return meta_weights(tmp_path_factory.mktemp("vit") / "dinov3_tiny.pth")


def assert_official_map(teacher_map):
    assert tuple(teacher_map.shape) == (2, WIDTH, 4, 4)
    assert teacher_map.sum().item() == pytest.approx(OFFICIAL_MAP["sum"], abs=2e-3)
    assert teacher_map.abs().sum().item() == pytest.approx(OFFICIAL_MAP["abs"], rel=1e-5)
    assert teacher_map.pow(2).sum().item() == pytest.approx(OFFICIAL_MAP["square"], rel=1e-5)
    torch.testing.assert_close(teacher_map[0, :4, 0, 0], torch.tensor(OFFICIAL_MAP["first"]), atol=1e-5, rtol=1e-5)
    assert teacher_map[1, -1, -1, -1].item() == pytest.approx(OFFICIAL_MAP["last"], abs=1e-5)


def images():
    return torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model", ["dinov3_vitb16", "vit_base_patch16_dinov3_qkvb"])
def test_meta_layout_weights_load_and_give_the_official_teacher_tokens(vit_weights, model):
    # ours reads Meta's names as they are; timm's model reads them through timm's own checkpoint filter
    teacher = ViTTeacher(model, vit_weights, TINY_VIT)
    assert teacher.width == WIDTH and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()   # DINOv3 jitters RoPE in training mode; the teacher always runs in eval mode
    assert_official_map(teacher(images()))


def test_loss_distill_equals_the_official_on_the_same_outputs(vit_weights):
    teacher_map = ViTTeacher("dinov3_vitb16", vit_weights, TINY_VIT)(images())
    generator = torch.Generator().manual_seed(1)
    torch.rand(2, 3, 128, 128, generator=generator)    # the images drawn above
    student = torch.nn.functional.interpolate(teacher_map, size=(3, 3), mode="bilinear", align_corners=False)
    student = student + torch.randn(2, WIDTH, 3, 3, generator=generator)
    criterion = build_criterion({"type": "RTv4Criterion", "weight_dict": {"loss_distill": 5.0}, "losses": ["distill"],
                                 "num_classes": 3, "matcher": {"type": "HungarianMatcher", "weight_dict": {
                                     "cost_class": 2, "cost_bbox": 5, "cost_giou": 2}}})
    outputs = {"pred_logits": torch.zeros(2, 4, 3), "pred_boxes": torch.full((2, 4, 4), 0.4),
               "student_distill_output": student, "teacher_encoder_output": teacher_map}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])} for _ in range(2)]
    assert criterion(outputs, targets)["loss_distill"].item() == pytest.approx(OFFICIAL_LOSS_DISTILL, rel=1e-6)


# ------------------------------------------------------------------------------ the trainer
# a tiny RT-DETRv4: strides 8/16/32, AIFI on the stride-32 level, projector to the teacher's width;
# at 64 px the teacher's tokens (64 / 2 pool / 16 patch) lie on the AIFI grid (2 x 2), as 640 px on 20 x 20
GRAPH = {"nc": 3, "imgsz": [64, 64],
         "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [24, 3, 2]],
                      [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [48, 3, 2]]],
         "encoder": [[[2, 3, 4], 1, "HybridEncoder", {"feat_strides": [8, 16, 32], "hidden_dim": 32, "nhead": 4,
                                                      "dim_feedforward": 64, "expansion": 0.5, "depth_mult": 0.34,
                                                      "distill_teacher_dim": WIDTH}]],
         "decoder": [[-1, 1, "DFINEDecoder", {"feat_strides": [8, 16, 32], "hidden_dim": 32, "num_levels": 3,
                                              "num_layers": 2, "num_points": [2, 2, 2], "nhead": 4,
                                              "dim_feedforward": 64, "num_queries": 12, "num_denoising": 6,
                                              "reg_max": 16}]]}
ADAPTIVE = {"enabled": True, "rho": 11, "delta": 1, "default_weight": 20}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("demo"))


def rtv4_config(demo, vit_weights, **overrides):
    """The RT-DETRv4 recipe on the tiny graph; the teacher weights given (None: left unset)."""
    cfg = tiny_config(demo, graph=GRAPH, **overrides)
    cfg["__include__"] = [str(REPO / "configs/recipes/rtdetrv4.yml")]
    cfg["criterion"] = {"reg_max": 16, "weight_dict": {"loss_distill": 5.0}, "distill_adaptive_params": ADAPTIVE}
    cfg["distill"] = {"foundation": {"weights": vit_weights, "model_kwargs": TINY_VIT}}
    return cfg


def rtv4_solver(demo, vit_weights, tmp_path, **overrides):
    cfg_path = write_config(rtv4_config(demo, vit_weights, **overrides), tmp_path / "rtv4.yml")
    return Solver(load_config(cfg_path), device="cpu", output_dir=str(tmp_path / "run"))


def test_run_config_without_teacher_weights_stops_and_says_so(demo, tmp_path):
    with pytest.raises(ConfigError, match="needs its weights") as err:
        rtv4_solver(demo, None, tmp_path)
    assert err.value.where == "distill.foundation.weights" and "dinov3_vitb16_pretrain_lvd1689m.pth" in err.value.hint


def test_foundation_section_has_one_weight_the_criterions(demo, vit_weights, tmp_path):
    cfg = rtv4_config(demo, vit_weights)
    cfg["distill"]["foundation"]["weight"] = 5.0
    with pytest.raises(ConfigError, match="unknown key 'weight'"):
        Solver(load_config(write_config(cfg, tmp_path / "c.yml")), device="cpu", output_dir=str(tmp_path / "r"))


def test_teacher_tokens_supervise_the_projector_on_the_official_tap(demo, vit_weights, tmp_path):
    solver = rtv4_solver(demo, vit_weights, tmp_path, epochs=2)
    encoder = solver.raw_model.layers[5]
    captured = {}
    encoder.encoder[0].register_forward_hook(lambda m, i, out: captured.__setitem__("aifi", out))
    images, targets = next(iter(solver.train_loader))
    solver.model.train()
    outputs = solver.model(images, targets=targets)
    outputs = solver.distiller.prepare(images, outputs, 0, torch.float32, False)
    # the official tap: the projector of the last AIFI output (before the FPN), per token
    projected = encoder.feature_projector(captured["aifi"].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(outputs["student_distill_output"], projected)
    teacher = ViTTeacher("dinov3_vitb16", vit_weights, TINY_VIT)(images)
    torch.testing.assert_close(outputs["teacher_encoder_output"], teacher)
    assert teacher.shape[-2:] == projected.shape[-2:] == (2, 2)
    cosine = torch.nn.functional.cosine_similarity(projected, teacher, dim=1)
    loss = solver.criterion(outputs, targets)["loss_distill"]
    assert loss.item() == pytest.approx(5.0 * (1 - cosine).mean().item(), rel=1e-5)   # one weight: loss_distill 5
    assert solver.distiller.losses(outputs, 0) == {}   # the foundation adds nothing beside the criterion's term

    before = encoder.feature_projector[0].weight.detach().clone()
    solver.schedule.set(10, 0)
    terms = solver.train_step(images, targets, 0, 0)
    assert terms["loss_distill"] > 0
    assert not torch.equal(before, encoder.feature_projector[0].weight)   # the projector learned
    assert all(not p.requires_grad for p in solver.distiller.foundation["teacher"].parameters())
    assert not any("teacher" in key for key in solver.state_dict()["model"])


def test_adaptive_weight_measures_the_aifi_share_in_one_process(demo, vit_weights, tmp_path):
    solver = rtv4_solver(demo, vit_weights, tmp_path, epochs=2)
    images, targets = next(iter(solver.train_loader))
    solver.model.train()
    outputs = solver.distiller.prepare(images, solver.model(images, targets=targets), 0, torch.float32, False)
    sum(solver.criterion(outputs, targets).values()).backward()
    solver.distiller.after_backward(solver.raw_model, 0)
    # the official rule's share, by name: RT-DETRv4's `encoder.encoder` is our row 5's `encoder` (AIFI)
    grads = {name: p.grad.abs().sum().item() for name, p in solver.raw_model.named_parameters() if p.grad is not None}
    expected = 100 * sum(v for k, v in grads.items() if k.startswith("layers.5.encoder.")) / sum(grads.values())
    assert 0 < expected < 100 and solver.distiller.shares == [pytest.approx(expected, rel=1e-5)]
    figures = solver.distiller.end_epoch(0, stage2=False)
    assert figures["distill_weight"] == pytest.approx(adapted_weight(5.0, expected, 11, 1, 20, False))
    assert solver.criterion.weight_dict["loss_distill"] == figures["distill_weight"] != 5.0
    saved = solver.distiller.state_dict()
    assert saved["loss_distill"] == figures["distill_weight"]
    solver.criterion.weight_dict["loss_distill"] = 5.0
    solver.distiller.load_state_dict(saved, "x.pth", resuming=True, restart=True)   # stage-2 restart: kept
    assert solver.criterion.weight_dict["loss_distill"] == 5.0
    solver.distiller.load_state_dict(saved, "x.pth", resuming=True)                  # -r: restored
    assert solver.criterion.weight_dict["loss_distill"] == figures["distill_weight"]
    assert solver.distiller.end_epoch(1, stage2=True)["distill_weight"] == 20        # stage 2: default_weight


def test_official_teacher_model_section_reads_as_distill_foundation(tmp_path):
    path = tmp_path / "official.yml"
    path.write_text("teacher_model:\n  type: DINOv3TeacherModel\n  dinov3_repo_path: dinov3/\n"
                    "  dinov3_weights_path: pretrain/dinov3_vitb16_pretrain_lvd1689m.pth\n  patch_size: 16\n"
                    "  mean: [0.485, 0.456, 0.406]\n  std: [0.229, 0.224, 0.225]\n")
    cfg = load_config(path, ["teacher_model.dinov3_weights_path=other.pth"])
    assert cfg["distill"] == {"kd_loss_type": "none", "foundation": {
        "model": "dinov3_vitb16", "weights": "other.pth", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    path.write_text("teacher_model: {type: DINOv2TeacherModel}\n")
    with pytest.raises(ConfigError, match="DINOv2TeacherModel"):
        load_config(path)


@pytest.mark.slow
@pytest.mark.parametrize("teacher", [True, False])
def test_torchrun_two_gloo_processes_train_an_rtdetrv4_graph(demo, vit_weights, tmp_path, teacher):
    # without the teacher nothing reaches the projector: it is frozen, so DDP does not stop on it
    cfg_path = write_config(rtv4_config(demo, vit_weights if teacher else None, epochs=1), tmp_path / "rtv4.yml")
    port = free_port()
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                           "train.py", "-c", str(cfg_path), "-d", "cpu", "--output-dir", str(out), "--quiet",
                           *([] if teacher else ["-u", "distill=~"])],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = json.loads((out / "log.txt").read_text().splitlines()[-1])
    if teacher:
        assert log["train_loss_distill"] > 0 and 0 < log["train_distill_grad_share"] < 100
    else:
        assert log["train_loss_distill"] == 0 and "projector" in done.stdout
