"""distill.py: feature / logit distillation on the shared trainer (the foundation teacher:
tests/test_rtdetrv4_distill.py).

Expected loss values are computed independently with numpy on small tensors."""
from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blocks.decoder._dfine_parts import weighting_function
from core.checkpoint_io import read_checkpoint, save_atomic
from engine import checkpoint
from engine.config import load_config
from engine.distill import adapted_weight, check_distill, epoch_window, logit_terms, schedule_factor
from engine.distill_losses import (MGDGenerator, cwd_loss, ickd_loss, logit_losses, match_queries, mgd_loss,
                                   mimic_loss, moved_edges, sp_loss)
from engine.solver import Solver
from models import build_model
from core.errors import CheckpointError, ConfigError
from tests.engine_helpers import REPO, TINY_GRAPH, make_data, subprocess_env, tiny_config, write_config


# ------------------------------------------------------------------------------ hand computations
def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_conv3x3(x, weight, bias):
    """x [C,H,W], weight [O,C,3,3], zero padding 1 — a direct loop."""
    c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[0], h, w))
    for o in range(weight.shape[0]):
        for i in range(h):
            for j in range(w):
                out[o, i, j] = (padded[:, i:i + 3, j:j + 3] * weight[o]).sum() + bias[o]
    return out


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))


def test_mimic_equals_mean_squared_error(maps):
    s, t = maps
    assert mimic_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(((s - t) ** 2).mean(), rel=1e-9)


def test_cwd_equals_channel_softmax_kl(maps):
    s, t = maps
    tau = 2.0
    expected = 0.0
    for b in range(2):
        for c in range(3):
            p_t = np_softmax(t[b, c].ravel() / tau)
            p_s = np_softmax(s[b, c].ravel() / tau)
            expected += (p_t * np.log(p_t / p_s)).sum()
    expected = expected / 6 * tau ** 2
    assert cwd_loss(torch.tensor(s), torch.tensor(t), tau).item() == pytest.approx(expected, rel=1e-9)


def test_cwd_hand_values_tau_squared_and_channel_mean():
    # one image, two channels of two locations; channel 0: teacher logits (ln 3, 0) -> (3/4, 1/4), student
    # uniform: KL = 3/4 ln(3/2) + 1/4 ln(1/2); channel 1 the same maps: KL 0; the mean over B*C halves it
    s = torch.zeros(1, 2, 1, 2)
    t = torch.tensor([[[[np.log(3.0), 0.0]], [[0.0, 0.0]]]])
    kl = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
    assert cwd_loss(s, t, 1.0).item() == pytest.approx(kl / 2, rel=1e-6)
    # tau 2: (ln 3 / 2, 0) -> (sqrt 3, 1) / (1 + sqrt 3), against uniform, times tau^2 = 4
    p = np.array([np.sqrt(3.0), 1.0]) / (1 + np.sqrt(3.0))
    assert cwd_loss(s, t, 2.0).item() == pytest.approx(4 * (p * np.log(2 * p)).sum() / 2, rel=1e-6)
    # KL(teacher || student), not the reverse: the student's gradient is (p_s - p_t) tau / (B C)
    s.requires_grad_(True)
    cwd_loss(s, t, 1.0).backward()
    assert s.grad[0, 0, 0].tolist() == pytest.approx([(0.5 - 0.75) / 2, (0.5 - 0.25) / 2], rel=1e-6)
    assert s.grad[0, 1].abs().max().item() < 1e-7


def test_ickd_hand_value():
    # student channels orthogonal: Gram I (rows already unit); teacher channels equal: rows (1, 1) / sqrt 2;
    # squared difference 2 (1 - 1/sqrt 2)^2 + 2 (1/2) over B*C = 2: 2 - sqrt 2
    s = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    t = torch.ones(1, 2, 1, 2)
    assert ickd_loss(s, t).item() == pytest.approx(2 - np.sqrt(2.0), rel=1e-6)


def test_ickd_equals_normalised_channel_gram_difference(maps):
    s, t = maps
    expected = 0.0
    for b in range(2):
        gs = s[b].reshape(3, -1) @ s[b].reshape(3, -1).T
        gt = t[b].reshape(3, -1) @ t[b].reshape(3, -1).T
        gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
        gt = gt / np.linalg.norm(gt, axis=1, keepdims=True)
        expected += ((gs - gt) ** 2).sum()
    expected /= 2 * 3
    assert ickd_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-9)


def test_sp_equals_normalised_batch_gram_difference():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=(3, 5, 2, 2))  # widths and sizes may differ
    fs, ft = s.reshape(3, -1), t.reshape(3, -1)
    gs, gt = fs @ fs.T, ft @ ft.T
    gs = gs / np.linalg.norm(gs, axis=1, keepdims=True)
    gt = gt / np.linalg.norm(gt, axis=1, keepdims=True)
    expected = ((gs - gt) ** 2).sum() / 9
    assert sp_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-9)


def test_mgd_equals_masked_generation_error(maps):
    s, t = maps
    rng = np.random.default_rng(2)
    keep = (rng.random((2, 1, 4, 5)) > 0.5).astype(np.float64)
    generator = MGDGenerator(3).double()
    w1, b1 = generator.block[0].weight.detach().numpy(), generator.block[0].bias.detach().numpy()
    w2, b2 = generator.block[2].weight.detach().numpy(), generator.block[2].bias.detach().numpy()
    alpha = 0.3
    expected = 0.0
    for b in range(2):
        hidden = np.maximum(np_conv3x3(s[b] * keep[b], w1, b1), 0)
        expected += ((np_conv3x3(hidden, w2, b2) - t[b]) ** 2).sum()
    expected = alpha * expected / 2
    got = mgd_loss(torch.tensor(s), torch.tensor(t), generator, alpha=alpha, keep=torch.tensor(keep))
    assert got.item() == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------ logit matching
def test_hungarian_query_matching_is_the_cheapest_permutation():
    rng = np.random.default_rng(3)
    s_logits, t_logits = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    s_boxes, t_boxes = rng.uniform(0.3, 0.6, (4, 4)), rng.uniform(0.3, 0.6, (4, 4))

    def giou(a, b):
        a = np.array([a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2])
        b = np.array([b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2])
        inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
        return inter / union - (hull - union) / hull

    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    cost = np.array([[2 * np.abs(sig(s_logits[i]) - sig(t_logits[j])).mean() + 5 * np.abs(s_boxes[i] - t_boxes[j]).sum()
                      - 2 * giou(s_boxes[i], t_boxes[j]) for j in range(4)] for i in range(4)])
    best = min(itertools.permutations(range(4)), key=lambda perm: sum(cost[i, perm[i]] for i in range(4)))
    rows, cols = match_queries(*(torch.tensor(x) for x in (s_logits, s_boxes, t_logits, t_boxes)))
    assert rows.tolist() == [0, 1, 2, 3] and cols.tolist() == list(best)

    # weighted: the cheapest permutation of the costs times each teacher query's confidence
    conf = sig(t_logits).max(-1)
    weighted = min(itertools.permutations(range(4)),
                   key=lambda perm: sum((cost[i, perm[i]] - cost.max()) * conf[perm[i]] for i in range(4)))
    rows, cols = match_queries(*(torch.tensor(x) for x in (s_logits, s_boxes, t_logits, t_boxes)), weighted=True)
    assert cols.tolist() == list(weighted)


def test_logit_distillation_matches_queries_within_each_image():
    # image 1's teacher predictions are image 0's student predictions shuffled, and vice versa: a matcher
    # that looked across images would pair them; a per-image one finds nothing close
    gen = torch.Generator().manual_seed(0)
    boxes = torch.rand(2, 3, 4, generator=gen) * 0.3 + 0.3
    logits = torch.randn(2, 3, 2, generator=gen)
    perm = torch.tensor([2, 0, 1])
    student = {"pred_logits": logits.clone().requires_grad_(), "pred_boxes": boxes.clone().requires_grad_()}
    same = {"pred_logits": logits[:, perm], "pred_boxes": boxes[:, perm]}   # each image: its own queries, permuted
    weights = {"cls": 1.0, "bbox": 1.0, "giou": 1.0, "ld": 1.0}
    terms = logit_terms(student, same, {"matching": "hungarian"}, weights)
    assert terms["loss_kd_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss_kd_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss_kd_cls"].item() == pytest.approx(0.0, abs=1e-9)    # quality focal: agreement costs nothing
    plain = logit_terms(student, same, {"matching": "hungarian", "cls_gamma": 0.0}, weights)
    p = torch.sigmoid(logits).double().numpy()   # plain BCE against its own probabilities = their entropy,
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p)).sum()   # over the teacher's confidence (at least 1)
    assert plain["loss_kd_cls"].item() == pytest.approx(entropy / max(p.max(-1).sum(), 1.0), rel=1e-5)

    swapped = {k: v.flip(0) for k, v in same.items()}                       # the other image's teacher
    crossed = logit_terms(student, swapped, {"matching": "hungarian"}, weights)
    assert crossed["loss_kd_bbox"].item() > 0.05
    terms["loss_kd_bbox"].backward()  # gradients reach the student's boxes only through matched pairs
    assert student["pred_boxes"].grad is not None


def test_proposals_learn_the_teachers_queries_class_agnostic_ones_its_best_score():
    gen = torch.Generator().manual_seed(1)
    boxes = torch.rand(2, 3, 4, generator=gen) * 0.3 + 0.3
    logits = torch.randn(2, 3, 2, generator=gen)
    teacher = {"pred_logits": logits, "pred_boxes": boxes}
    best = logits.max(-1, keepdim=True).values                     # one class-agnostic score per query
    student = {"pred_logits": logits, "pred_boxes": boxes, "pre_outputs": {"pred_logits": logits, "pred_boxes": boxes},
               "enc_aux_outputs": [{"pred_logits": best, "pred_boxes": boxes}]}
    weights = {"cls": 1.0, "bbox": 1.0, "giou": 1.0, "ld": 1.0}
    assert set(logit_terms(student, teacher, {}, weights)) == {"loss_kd_cls", "loss_kd_bbox", "loss_kd_giou"}
    terms = logit_terms(student, teacher, {"proposals": True}, weights)
    assert {k for k in terms if k.endswith(("_pre", "_enc_0"))} == {
        f"loss_kd_{n}{s}" for n in ("cls", "bbox", "giou") for s in ("_pre", "_enc_0")}
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in terms.values())   # each agrees with its target
    student["enc_aux_outputs"] = [{"pred_logits": -best, "pred_boxes": boxes}]
    assert logit_terms(student, teacher, {"proposals": True}, weights)["loss_kd_cls_enc_0"].item() > 0.01


def test_corner_distributions_move_into_the_students_frame():
    # D-FINE's bins for reg_max 8, up 0.5, reg_scale 4: W(n) by hand from its definition
    a = 0.5 * 4.0
    step = (a + 1) ** (2 / 6)
    right = [step ** i - 1 for i in range(1, 4)]
    bins = torch.tensor([-2 * a, *[-r for r in reversed(right)], 0.0, *right, 2 * a])
    scale = torch.tensor([4.0])
    torch.testing.assert_close(weighting_function(8, torch.tensor([0.5]), scale), bins)
    prob = torch.softmax(torch.randn(3, 4, 9, generator=torch.Generator().manual_seed(0)), -1)
    refs = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1], [0.7, 0.2, 0.4, 0.2]])
    torch.testing.assert_close(moved_edges(prob, refs, bins, scale, refs, bins, scale), prob)  # same frame: as is

    def mean_edges(p, ref):   # the box D-FINE decodes from the expected offsets (distance2bbox)
        d = (p * bins).sum(-1)
        w, h = ref[:, 2] / 4.0, ref[:, 3] / 4.0
        return torch.stack([ref[:, 0] - (2 + d[:, 0]) * w, ref[:, 1] - (2 + d[:, 1]) * h,
                            ref[:, 0] + (2 + d[:, 2]) * w, ref[:, 1] + (2 + d[:, 3]) * h], -1)

    other = refs + torch.tensor([0.01, -0.005, 0.03, 0.02])   # nearby boxes: no mass beyond the end bins
    moved = moved_edges(prob, refs, bins, scale, other, bins, scale)
    assert torch.allclose(moved.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(mean_edges(moved, other), mean_edges(prob, refs), atol=1e-6, rtol=0)

    # a finer student (reg_max 16, same ends +-2a): every teacher bin is split between two of its bins,
    # the expected edge stays where it was
    fine = weighting_function(16, torch.tensor([0.5]), scale)
    finer = moved_edges(prob, refs, bins, scale, refs, fine, scale)
    assert finer.shape == (3, 4, 17) and torch.allclose(finer.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close((finer * fine).sum(-1), (prob * bins).sum(-1), atol=1e-6, rtol=0)



def test_corner_distillation_is_the_plain_kl_in_one_frame_and_zero_at_the_moved_teacher():
    gen = torch.Generator().manual_seed(2)
    scale, up = torch.tensor([4.0]), torch.tensor([0.5])
    bins = weighting_function(8, up, scale)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]]])
    t_corners, s_corners = torch.randn(2, 1, 2, 36, generator=gen)
    teacher = {"pred_logits": torch.full((1, 2, 1), 9.0), "pred_boxes": boxes, "pred_corners": t_corners,
               "ref_points": boxes, "bins": bins, "reg_scale": scale}
    student = {**teacher, "pred_corners": s_corners}
    index = [(torch.arange(2), torch.arange(2))]
    t_edges, s_edges = t_corners.reshape(2, 4, 9) / 5, s_corners.reshape(2, 4, 9) / 5
    kl = (F.softmax(t_edges, -1) * (F.log_softmax(t_edges, -1) - F.log_softmax(s_edges, -1))).sum(-1).mean(-1)
    weight = torch.sigmoid(torch.tensor(9.0))
    expected = (weight * kl).sum() / (2 * weight) * 25          # confidence-weighted mean, times T^2
    assert logit_losses(student, teacher, index)["ld"].item() == pytest.approx(expected.item(), rel=1e-5)

    # another frame: a student whose (T = 1) distributions are the moved teacher's has nothing to learn
    refs = boxes + torch.tensor([0.01, -0.005, 0.03, 0.02])
    moved = moved_edges(F.softmax(t_corners.reshape(2, 4, 9), -1), boxes[0], bins, scale, refs[0], bins, scale)
    aligned = {**student, "ref_points": refs, "pred_corners": moved.clamp(min=1e-30).log().reshape(1, 2, 36)}
    assert logit_losses(aligned, teacher, index)["ld"].item() == pytest.approx(0.0, abs=1e-5)

    # a student box too far for its bins to reach the teacher's edges learns nothing from them
    far = {**student, "ref_points": boxes + torch.tensor([1.5, 1.5, 0.0, 0.0])}
    assert logit_losses(far, teacher, index)["ld"].item() == pytest.approx(0.0, abs=1e-9)


def test_schedule_window_and_decay():
    assert epoch_window([0, 0.5], 10) == (0, 5)
    assert epoch_window([2, 6], 10) == (2, 6)
    assert [schedule_factor("constant", e, 0, 5) for e in (0, 4, 5, 9)] == [1.0, 1.0, 0.0, 0.0]
    assert [schedule_factor("linear", e, 2, 6) for e in (1, 2, 3, 5, 6)] == [0.0, 1.0, 0.75, 0.25, 0.0]
    assert schedule_factor("cosine", 3, 2, 6) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    with pytest.raises(ConfigError):
        epoch_window([5, 5], 10)
    with pytest.raises(ConfigError, match="starts at epoch 12, but the run has 10 epochs"):
        epoch_window([12, 20], 10)   # a window wholly after the run would switch distillation off for good


@pytest.mark.parametrize("pair, where, message", [
    ({"student": 2}, "distill.feature.pairs[0].teacher", "missing required key 'teacher'"),
    ({"student": 2, "teacher": 2, "loss": "kl"}, "distill.feature.pairs[0].loss", "must be one of 'mimic', 'cwd'"),
    ({"student": 2, "teacher": 2, "weight": -1}, "distill.feature.pairs[0].weight", r"must be a number \(>= 0\)"),
    ({"student": 2, "teacher": 2, "wieght": 1}, "distill.feature.pairs[0].wieght", "unknown key 'wieght'"),
])
def test_a_bad_feature_pair_names_its_own_key(pair, where, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_distill({"kd_loss_type": "feature", "feature": {"pairs": [pair]}})
    assert err.value.where == where


def test_adaptive_weight_follows_rtdetrv4_rule():
    # share 20% is above the band [10, 12]: RT-DETRv4 aims at the far bound, 10%: ratio 0.1 * 0.8 / (0.2 * 0.9)
    assert adapted_weight(5.0, 20.0, 11, 1, 20, False) == pytest.approx(5.0 * 0.08 / 0.18)
    assert adapted_weight(5.0, 5.0, 11, 1, 20, False) == pytest.approx(5.0 * 0.12 * 0.95 / (0.05 * 0.88))
    assert adapted_weight(5.0, 11.5, 11, 1, 20, False) == 5.0                 # inside the band
    assert adapted_weight(5.0, 0.01, 11, 1, 20, False) == pytest.approx(50.0)  # ratio capped at 10x
    assert adapted_weight(5.0, 20.0, 11, 1, 20, True) == 20                   # stage 2: default weight
    assert adapted_weight(5.0, 0.0, 11, 1, None, False) == 5.0


# ------------------------------------------------------------------------------ the trainer
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def teacher(demo, tmp_path_factory):
    """A teacher trained for one epoch: (config path, checkpoint path)."""
    root = tmp_path_factory.mktemp("teacher")
    cfg_path = write_config(tiny_config(demo, epochs=1), root / "teacher.yml")
    Solver(load_config(cfg_path), device="cpu", output_dir=str(root / "run")).fit()
    return cfg_path, root / "run" / "last.pth"


def student_graph(width: int = 24, queries: int = 12) -> dict:
    graph = copy.deepcopy(TINY_GRAPH)
    graph["backbone"][2][3][0] = width          # row 2: 24 channels against the teacher's 32
    graph["decoder"][0][3]["num_queries"] = queries
    return graph


def student_config(demo, tmp_path, distill: dict, queries: int = 12, **overrides):
    cfg = tiny_config(demo, graph=student_graph(queries=queries), distill=distill, **overrides)
    return write_config(cfg, tmp_path / "student.yml")


def distill_solver(cfg_path, teacher, tmp_path, **options):
    return Solver(load_config(cfg_path), device="cpu", output_dir=str(tmp_path / "run"),
                         teacher_config=str(teacher[0]), teacher_weights=str(teacher[1]), **options)


FEATURE_KD = {"kd_loss_type": "feature", "feature": {"pairs": [{"student": 2, "teacher": 2, "loss": "cwd"},
                                                               {"student": 3, "teacher": 3, "loss": "mgd", "alpha": 1e-3}]}}


def test_feature_step_trains_student_and_adapters_not_teacher(demo, teacher, tmp_path):
    solver = distill_solver(student_config(demo, tmp_path, FEATURE_KD), teacher, tmp_path)
    assert isinstance(solver.distiller.kd.pairs[0].adapter, torch.nn.Sequential)    # 24 -> 32 channels: an adapter
    assert isinstance(solver.distiller.kd.pairs[1].adapter, torch.nn.Identity)      # 32 -> 32: none
    images, targets = next(iter(solver.train_loader))
    solver.model.train()
    solver.model(images, targets=targets)
    for row in (2, 3):  # the tapped student features keep their graph
        assert solver.distiller.student_taps[row].requires_grad and solver.distiller.student_taps[row].grad_fn is not None

    snapshot = lambda module: {k: v.clone() for k, v in module.state_dict().items()}  # noqa: E731
    student, kd, teacher_before = snapshot(solver.raw_model), snapshot(solver.distiller.kd), snapshot(solver.distiller.teacher)
    solver.schedule.set(10, 0)   # past the warm-up: a non-zero lr
    terms = solver.train_step(images, targets, 0, 0)
    assert terms["loss_kd_cwd_0"] > 0 and terms["loss_kd_mgd_1"] > 0
    changed = lambda before, module: [k for k, v in module.state_dict().items()  # noqa: E731
                                      if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed(kd, solver.distiller.kd) and any(k.startswith("pairs.0.adapter.0") for k in changed(kd, solver.distiller.kd))
    assert any(k.startswith("pairs.1.generator") for k in changed(kd, solver.distiller.kd))
    assert any(k.startswith("layers.2.") for k in changed(student, solver.raw_model))
    assert not changed(teacher_before, solver.distiller.teacher)
    assert not solver.distiller.teacher.training and all(not p.requires_grad for p in solver.distiller.teacher.parameters())
    assert all(not k.startswith("teacher") for k in solver.state_dict())


def test_denoising_queries_learn_the_teachers_answers_to_the_same_queries(demo, teacher, tmp_path):
    # a student with the teacher's own weights (BatchNorm on its running statistics, as the teacher in eval
    # mode) gives the teacher's answers to its denoising queries, query by query: the denoising terms are 0
    # only because the teacher ran the very same noised queries; another draw of the noise moves them off 0
    distill = {"kd_loss_type": "logit", "logit": {"denoising": True, "layers": "final", "weights": {"ld": 0.0}}}
    solver = distill_solver(write_config(tiny_config(demo, distill=distill), tmp_path / "self.yml"), teacher, tmp_path)
    model, distiller = solver.raw_model, solver.distiller
    model.load_state_dict(distiller.teacher.state_dict())
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    images, targets = next(iter(solver.train_loader))
    outputs = model(images, targets=targets)
    meta = outputs["dn_meta"]
    terms = distiller.losses(distiller.prepare(images, outputs, 0, torch.float32, False), 0)
    for name in ("cls", "bbox", "giou"):
        assert terms[f"loss_kd_{name}_dn_1"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["loss_kd_bbox"].item() == pytest.approx(0.0, abs=1e-5)   # the matching queries agree too
    terms["loss_kd_bbox_dn_1"].backward()
    assert model.layers[-1].denoising_class_embed.weight.grad is not None  # the terms reach the denoising path

    gen = torch.Generator().manual_seed(0)
    moved = {**meta, "dn_boxes_unact": meta["dn_boxes_unact"] + torch.randn(meta["dn_boxes_unact"].shape, generator=gen)}
    other = distiller.losses(distiller.prepare(images, {**outputs, "dn_meta": moved}, 0, torch.float32, False), 0)
    assert other["loss_kd_bbox_dn_1"].item() > 0.05


def test_epoch_window_switches_distillation_off(demo, teacher, tmp_path):
    cfg = dict(FEATURE_KD, kd_loss_type="all", epoch_window=[0, 1], schedule="constant")
    solver = distill_solver(student_config(demo, tmp_path, cfg, epochs=2), teacher, tmp_path)
    calls = []
    run = solver.distiller.teacher.run
    solver.distiller.teacher.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    images, targets = next(iter(solver.train_loader))
    solver.model.train()
    outputs = solver.model(images, targets=targets)
    distiller = solver.distiller

    def losses(epoch):
        distiller.prepare(images, outputs, epoch, torch.float32, False)
        return distiller.losses(outputs, epoch)

    on = losses(0)
    assert {"loss_kd_cls", "loss_kd_bbox", "loss_kd_giou", "loss_kd_ld", "loss_kd_cwd_0"} <= set(on) and calls == [1]
    outputs = solver.model(images, targets=targets)
    assert losses(1) == {} and calls == [1]


def test_mismatched_classes_or_queries_are_config_errors(demo, teacher, tmp_path):
    with pytest.raises(ConfigError, match="index pairs query i"):
        distill_solver(student_config(demo, tmp_path, {"kd_loss_type": "logit", "logit": {"matching": "index"}},
                                      queries=10), teacher, tmp_path)

    two_classes = build_model(TINY_GRAPH, nc=2, check=False)   # a teacher of another dataset
    save_atomic({"model": two_classes.state_dict(), "meta": {"graph_spec": TINY_GRAPH, "nc": 2}},
                           tmp_path / "t.pth")
    save_atomic({"model": build_model(student_graph(), nc=3, check=False).state_dict()}, tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="does not fit this model") as err:   # student weights as -tw
        Solver(load_config(student_config(demo, tmp_path, {"kd_loss_type": "logit"})), device="cpu",
               output_dir=str(tmp_path / "run1"), teacher_config=str(teacher[0]), teacher_weights=str(tmp_path / "s.pth"))
    assert err.value.where.startswith("-tw ") and "-tc the run config" in err.value.hint
    with pytest.raises(ConfigError, match="same classes"):
        Solver(load_config(student_config(demo, tmp_path, {"kd_loss_type": "logit"})), device="cpu",
                      output_dir=str(tmp_path / "run2"), teacher_config=str(teacher[0]),
                      teacher_weights=str(tmp_path / "t.pth"))
    swapped = torch.load(teacher[1], map_location="cpu", weights_only=True)  # the same count, another order
    names = swapped["meta"]["names"]
    swapped["meta"]["names"] = [names[1], names[0], *names[2:]]
    save_atomic(swapped, tmp_path / "swapped.pth")
    with pytest.raises(ConfigError, match=f"class 0 is '{names[0]}' in the student's data and '{names[1]}'"):
        Solver(load_config(student_config(demo, tmp_path, {"kd_loss_type": "logit"})), device="cpu",
               output_dir=str(tmp_path / "run3"), teacher_config=str(teacher[0]),
               teacher_weights=str(tmp_path / "swapped.pth"))


def test_the_teacher_config_is_checked_and_a_graph_it_does_not_use_is_named(demo, teacher, tmp_path, capsys):
    cfg_path = student_config(demo, tmp_path, {"kd_loss_type": "logit"})
    with pytest.raises(ConfigError, match="epohcs") as err:   # a -tu typo is not dropped without a word
        Solver(load_config(cfg_path), device="cpu", output_dir=str(tmp_path / "run"),
               teacher_config=str(teacher[0]), teacher_weights=str(teacher[1]), teacher_updates=["epohcs=3"])
    assert str(teacher[0]) in str(err.value)
    other = write_config(tiny_config(demo, graph=student_graph(queries=12)), tmp_path / "other_teacher.yml")
    capsys.readouterr()
    solver = Solver(load_config(cfg_path), device="cpu", output_dir=str(tmp_path / "run"),
                    teacher_config=str(other), teacher_weights=str(teacher[1]))
    assert "differs and is not used" in capsys.readouterr().out
    assert sum(p.numel() for p in solver.distiller.teacher.parameters()) == sum(
        p.numel() for p in build_model(TINY_GRAPH, nc=3, check=False).parameters())   # the teacher's own graph
    distill_solver(cfg_path, teacher, tmp_path)
    assert "differs" not in capsys.readouterr().out


@pytest.mark.slow
def test_distill_cli_then_resume_then_test_only(demo, teacher, tmp_path):
    distill = {"kd_loss_type": "all", "logit": {"layers": "all", "layer_weights": [0.5, 1.0]},
               "feature": FEATURE_KD["feature"], "schedule": "linear", "epoch_window": [0, 1.0]}
    cfg_path = student_config(demo, tmp_path, distill, epochs=1)
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "distill.py", "-sc", str(cfg_path), "-tc", str(teacher[0]),
                           "-tw", str(teacher[1]), "-d", "cpu", "--output-dir", str(out)],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = json.loads((out / "log.txt").read_text().splitlines()[-1])
    for name in ("loss_kd_cls", "loss_kd_cls_aux_0", "loss_kd_bbox", "loss_kd_giou", "loss_kd_ld", "loss_kd_cwd_0",
                 "loss_kd_mgd_1"):
        assert log[f"train_{name}"] > 0, name
    assert log["train_kd_factor"] == 1.0
    state = read_checkpoint(out / "last.pth")
    assert "pairs.0.adapter.0.weight" in state["distill"]["modules"]
    assert not any("teacher" in key for key in state)
    assert json.loads((out / "args.json").read_text())["teacher_weights"] == str(teacher[1])

    test_dir = tmp_path / "test"
    done = subprocess.run([sys.executable, "train.py", "-c", str(cfg_path), "-d", "cpu", "--test-only", "-r",
                           str(out / "last.pth"), "--output-dir", str(test_dir)],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stats = json.loads((test_dir / "test_stats.json").read_text())
    assert stats["stats"][0] == log["test_AP50:95"]

    # resume restores the adapters (a longer run continuing from the one-epoch checkpoint)
    longer = write_config({**load_config(cfg_path), "epochs": 2}, tmp_path / "longer.yml")
    resumed = distill_solver(longer, teacher, tmp_path, resume=str(out / "last.pth"))
    assert resumed.epoch == 0
    for key, value in state["distill"]["modules"].items():
        assert torch.equal(resumed.distiller.kd.state_dict()[key], value), key


def test_use_amp_on_the_cpu_trains_in_fp32_unless_bf16_is_forced(demo, tmp_path, capsys):
    # distill.py and train.py share --use-amp; bf16 autocast was slower than fp32 on the CPUs measured
    cfg_path = write_config(tiny_config(demo, epochs=1), tmp_path / "amp.yml")
    solver = Solver(load_config(cfg_path), device="cpu", use_amp=True, output_dir=str(tmp_path / "a"))
    assert solver.use_amp is False and not solver.scaler.is_enabled()
    assert "--use-amp on the CPU" in capsys.readouterr().out
    forced = Solver(load_config(cfg_path, ["amp_dtype=bfloat16"]), device="cpu", use_amp=True,
                    output_dir=str(tmp_path / "b"))
    assert forced.use_amp is True and forced.amp_dtype == torch.bfloat16 and not forced.scaler.is_enabled()
    assert "--use-amp on the CPU" not in capsys.readouterr().out
