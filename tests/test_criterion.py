"""Criterion terms against hand/numpy computations on a 2-query, 2-class image.

The case: one target of class 0, box (0.5, 0.5, 0.2, 0.5); query 0 (matched) predicts
(0.5, 0.5, 0.4, 0.4), query 1 (unmatched) (0.2, 0.2, 0.1, 0.1). In xyxy the prediction is
[0.3, 0.3, 0.7, 0.7] (area 0.16) and the target [0.4, 0.25, 0.6, 0.75] (area 0.1): intersection
0.2 x 0.4 = 0.08, union 0.18 -> IoU 4/9; enclosing box 0.4 x 0.5 = 0.2 -> GIoU 4/9 - 0.02/0.2.
The official-equivalence check (D-FINE / DEIM / DEIMv2 / RT-DETRv2 criteria on realistic shapes) was
run outside the repo; see the report of issue #5.
"""
import math

import numpy as np
import pytest
import torch

from models.criterion import DFINECriterion, DEIMCriterion, TargetError, build_criterion
from models.criterion.feature_distill import cosine_distillation_loss
from core.errors import ConfigError, DetrZooError

LOGITS = np.array([[2.0, -1.0], [-0.5, 0.5]])
PRED = [[0.5, 0.5, 0.4, 0.4], [0.2, 0.2, 0.1, 0.1]]
TARGET = {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.5]]), "image_id": torch.tensor(7)}
IOU = 4 / 9
GIOU = 4 / 9 - 0.1
MATCHED = np.array([[1.0, 0.0], [0.0, 0.0]])  # one-hot of the matched class per (query, class)


class FixedMatcher(torch.nn.Module):
    """Query 0 answers target 0 in every image that has a target."""

    def forward(self, outputs, targets, epoch=0):
        return [(torch.tensor([0] * min(1, len(t["labels"]))), torch.tensor([0] * min(1, len(t["labels"]))))
                for t in targets]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce(x, t):
    return -(t * np.log(sigmoid(x)) + (1 - t) * np.log(1 - sigmoid(x)))


def outputs(**extra):
    out = {"pred_logits": torch.tensor(LOGITS, dtype=torch.float32)[None],
           "pred_boxes": torch.tensor(PRED)[None]}
    out.update(extra)
    return out


def criterion(cls=DEIMCriterion, **kw):
    kw.setdefault("weight_dict", {"loss_focal": 1, "loss_vfl": 1, "loss_mal": 1, "loss_bbox": 1, "loss_giou": 1,
                                  "loss_fgl": 1, "loss_ddf": 1})
    kw.setdefault("num_classes", 2)
    return cls(FixedMatcher(), **kw)


def test_focal_loss_by_hand():
    alpha, gamma = 0.25, 2.0
    p = sigmoid(LOGITS)
    p_t = p * MATCHED + (1 - p) * (1 - MATCHED)
    alpha_t = alpha * MATCHED + (1 - alpha) * (1 - MATCHED)
    expected = (alpha_t * (1 - p_t) ** gamma * bce(LOGITS, MATCHED)).sum() / 1
    got = criterion(losses=["focal"], alpha=alpha, gamma=gamma)(outputs(), [TARGET])
    assert got["loss_focal"].item() == pytest.approx(expected, rel=1e-6)


def test_varifocal_loss_by_hand():
    alpha, gamma = 0.75, 2.0
    score = MATCHED * IOU
    weight = alpha * sigmoid(LOGITS) ** gamma * (1 - MATCHED) + score
    expected = (weight * bce(LOGITS, score)).sum()
    got = criterion(losses=["vfl"], alpha=alpha, gamma=gamma)(outputs(), [TARGET])
    assert got["loss_vfl"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mal_alpha", [None, 0.5])
def test_matchability_aware_loss_by_hand(mal_alpha):
    gamma = 1.5
    # positives: BCE towards IoU^gamma with weight 1; negatives: weight p^gamma (x mal_alpha)
    negative = sigmoid(LOGITS) ** gamma * (1 - MATCHED) * (1.0 if mal_alpha is None else mal_alpha)
    expected = ((negative + MATCHED) * bce(LOGITS, MATCHED * IOU ** gamma)).sum()
    got = criterion(losses=["mal"], gamma=gamma, mal_alpha=mal_alpha)(outputs(), [TARGET])
    assert got["loss_mal"].item() == pytest.approx(expected, rel=1e-6)


def test_l1_and_giou_by_hand():
    got = criterion(losses=["boxes"])(outputs(), [TARGET])
    assert got["loss_bbox"].item() == pytest.approx(0.2 + 0.1, rel=1e-5)  # |0.4 - 0.2| + |0.4 - 0.5|
    assert got["loss_giou"].item() == pytest.approx(1 - GIOU, rel=1e-5)


def test_loss_weights_scale_terms_and_unweighted_terms_are_dropped():
    got = criterion(losses=["boxes"], weight_dict={"loss_bbox": 5})(outputs(), [TARGET])
    assert set(got) == {"loss_bbox"} and got["loss_bbox"].item() == pytest.approx(1.5, rel=1e-5)


def _corner_logits(seed):
    return np.random.default_rng(seed).normal(size=(2, 4, 5))  # [Q, edges, reg_max + 1 bins]


def _local_outputs(aux_corners=None):
    corners = _corner_logits(0)
    layer = dict(pred_corners=torch.tensor(corners.reshape(1, 2, 20), dtype=torch.float32),
                 ref_points=torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.2, 0.2, 0.1, 0.1]]]))
    out = outputs(up=torch.tensor([0.5]), reg_scale=torch.tensor([4.0]), **layer)
    if aux_corners is not None:
        aux = outputs(pred_corners=torch.tensor(aux_corners.reshape(1, 2, 20), dtype=torch.float32),
                      ref_points=layer["ref_points"], teacher_corners=out["pred_corners"],
                      teacher_logits=out["pred_logits"])
        out["aux_outputs"] = [aux]
    return out, corners


def log_softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis, keepdims=True))


def test_fgl_by_hand():
    # reg_max 4, up 0.5, reg_scale 4: bins W = [-4, -2, 0, 2, 4]. The reference box (0.5, 0.5, 0.4, 0.4)
    # has edge unit w / reg_scale = 0.1, and offsets are measured past half a box (reg_scale / 2 = 2):
    # left (0.5-0.4)/0.1 - 2 = -1, top (0.5-0.25)/0.1 - 2 = 0.5, right -1, bottom 0.5.
    # -1 sits halfway between bins 1 and 2; 0.5 a quarter of the way from bin 2 to bin 3.
    out, corners = _local_outputs()
    edges = [(1, 0.5), (2, 0.25), (1, 0.5), (2, 0.25)]  # (left bin, weight of the right bin)
    logp = log_softmax(corners[0])
    expected = sum((-logp[e, b] * (1 - wr) - logp[e, b + 1] * wr) * IOU for e, (b, wr) in enumerate(edges))
    got = criterion(losses=["local"], reg_max=4)(out, [TARGET])
    assert set(got) == {"loss_fgl"}  # the final layer has no teacher, so no DDF
    assert got["loss_fgl"].item() == pytest.approx(expected, rel=1e-5)


def test_ddf_by_hand():
    temperature = 5.0
    aux_corners = _corner_logits(1)
    out, teacher = _local_outputs(aux_corners)
    log_q = log_softmax(aux_corners / temperature)
    p = np.exp(log_softmax(teacher / temperature))
    kl = (p * (np.log(p) - log_q)).sum(-1) * temperature ** 2  # [Q, edges]
    # matched query weighted by its IoU, unmatched by the teacher's best class probability
    weights = np.array([IOU, sigmoid(LOGITS[1]).max()])
    positive, negative = (kl[0] * weights[0]).mean(), (kl[1] * weights[1]).mean()
    # 4 matched and 4 unmatched edges in one image: sqrt(4 * 8) each, an even mix
    expected = (positive * math.sqrt(32) + negative * math.sqrt(32)) / (2 * math.sqrt(32))
    got = criterion(losses=["local"], reg_max=4)(out, [TARGET])
    assert got["loss_ddf_aux_0"].item() == pytest.approx(expected, rel=1e-5)


def test_dfine_reports_zero_ddf_on_self_taught_layer_and_deim_omits_it():
    out, _ = _local_outputs(aux_corners=_corner_logits(0))  # the aux layer equals its teacher
    dfine = criterion(DFINECriterion, losses=["local"], reg_max=4)(out, [TARGET])
    deim = criterion(DEIMCriterion, losses=["local"], reg_max=4)(out, [TARGET])
    assert dfine["loss_ddf_aux_0"].item() == 0.0
    assert "loss_ddf_aux_0" not in deim


def test_distillation_cosine_term():
    student = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # tokens (1, 0) and (0, 1)
    teacher = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])  # tokens (1, 0) and (1, 1)
    expected = ((1 - 1.0) + (1 - 1 / math.sqrt(2))) / 2
    assert cosine_distillation_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # a teacher on a finer grid is resized to the student's; a constant map stays constant
    big = torch.ones(1, 2, 4, 8)
    assert cosine_distillation_loss(torch.ones(1, 2, 1, 2), big).item() == pytest.approx(0.0, abs=1e-6)


DEIM_RECIPE = {"type": "DEIMCriterion", "losses": ["mal", "boxes", "local"], "gamma": 1.5, "alpha": 0.75,
               "weight_dict": {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15, "loss_ddf": 1.5},
               "reg_max": 8, "num_classes": 3,
               "matcher": {"type": "HungarianMatcher", "weight_dict": {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2},
                           "alpha": 0.25, "gamma": 2.0}}


def _decoder_outputs(batch=2, queries=6, classes=3, layers=3, reg_max=8, dn_groups=2, num_targets=(2, 0), seed=0,
                     boxes=None):
    """A D-FINE-shaped output dict: final layer, aux layers with teachers, pre, enc and denoising outputs."""
    g = torch.Generator().manual_seed(seed)

    def layer(q, corners=True):
        out = {"pred_logits": torch.randn(batch, q, classes, generator=g, requires_grad=True),
               "pred_boxes": (torch.rand(batch, q, 4, generator=g) * 0.5 + 0.2).requires_grad_()}
        if corners:
            out["pred_corners"] = torch.randn(batch, q, 4 * (reg_max + 1), generator=g, requires_grad=True)
            out["ref_points"] = torch.rand(batch, q, 4, generator=g) * 0.5 + 0.2
        return out

    def stack(q):
        decs = [layer(q) for _ in range(layers)]
        for d in decs:
            d["teacher_corners"], d["teacher_logits"] = decs[-1]["pred_corners"], decs[-1]["pred_logits"]
        return decs

    decs = stack(queries)
    out = {k: decs[-1][k] for k in ("pred_logits", "pred_boxes", "pred_corners", "ref_points")}
    if boxes is not None:
        out["pred_boxes"] = boxes
    out.update(up=torch.tensor([0.5]), reg_scale=torch.tensor([4.0]), aux_outputs=decs[:-1],
               pre_outputs=layer(queries, corners=False), enc_aux_outputs=[layer(queries, corners=False)],
               enc_meta={"class_agnostic": False})
    max_gt = max(num_targets)
    if max_gt:
        positive = [torch.cat([torch.arange(n) + 2 * max_gt * k for k in range(dn_groups)]) for n in num_targets]
        out["dn_outputs"] = stack(2 * max_gt * dn_groups)
        out["dn_pre_outputs"] = layer(2 * max_gt * dn_groups, corners=False)
        out["dn_meta"] = {"dn_positive_idx": positive, "dn_num_group": dn_groups,
                          "dn_num_split": [2 * max_gt * dn_groups, queries]}
    targets = [{"labels": torch.randint(0, classes, (n,), generator=g), "image_id": torch.tensor(i),
                "boxes": torch.rand(n, 4, generator=g) * 0.4 + 0.3} for i, n in enumerate(num_targets)]
    return out, targets


def test_full_recipe_names_every_term_and_backpropagates():
    out, targets = _decoder_outputs()
    losses = build_criterion(DEIM_RECIPE)(out, targets)
    base, with_ddf = ["loss_mal", "loss_bbox", "loss_giou"], ["loss_mal", "loss_bbox", "loss_giou", "loss_fgl", "loss_ddf"]
    expected = {*base, "loss_fgl"}  # the final layer teaches the others: no DDF of its own
    for suffix in ["_aux_0", "_aux_1", "_dn_0", "_dn_1"]:
        expected |= {name + suffix for name in with_ddf}
    expected |= {name + "_dn_2" for name in with_ddf[:-1]}  # the last dn layer is its own teacher
    for suffix in ["_pre", "_enc_0", "_dn_pre"]:
        expected |= {name + suffix for name in base}
    assert set(losses) == expected
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(out["pred_logits"].grad).all()


@pytest.mark.parametrize("family", ["DFINECriterion", "DEIMCriterion", "DEIMv2Criterion", "RTDETRv2Criterion"])
def test_images_without_targets_give_finite_losses(family):
    out, targets = _decoder_outputs(num_targets=(0, 0))
    losses = build_criterion(dict(DEIM_RECIPE, type=family))(out, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_degenerate_and_nan_boxes_do_not_crash():
    boxes = torch.rand(2, 6, 4) * 0.5 + 0.2
    boxes[0, 0, 2] = 0.0     # zero width
    boxes[0, 1, 3] = -0.1    # negative height
    boxes[1, :2] = float("nan")
    out, targets = _decoder_outputs(num_targets=(2, 3), boxes=boxes.requires_grad_())
    targets[1]["boxes"][0, 2:] = 0.0  # a zero-size target too
    losses = build_criterion(DEIM_RECIPE)(out, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_class_id_out_of_range_names_image_and_class():
    out, targets = _decoder_outputs(num_targets=(2, 1))
    targets[1]["labels"] = torch.tensor([3])  # num_classes is 3
    with pytest.raises(TargetError) as err:
        build_criterion(DEIM_RECIPE)(out, targets)
    assert isinstance(err.value, ValueError) and isinstance(err.value, DetrZooError)
    assert "image_id 1" in str(err.value) and "class id 3" in str(err.value)


def test_unknown_names_and_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown criterion type .NoSuchCriterion"):
        build_criterion(dict(DEIM_RECIPE, type="NoSuchCriterion"))
    with pytest.raises(ConfigError, match="unknown loss terms"):
        build_criterion(dict(DEIM_RECIPE, losses=["mal", "dice"]))
    with pytest.raises(ConfigError, match="lossess"):
        build_criterion(dict(DEIM_RECIPE, lossess=["mal"]))


@pytest.mark.parametrize("edit, where, message", [
    # a typo in a loss weight would leave the real term at its included weight, without a word
    ({"weight_dict": {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgll": 0.15}}, "criterion.weight_dict",
     r"keys \['loss_fgll'\] are no loss's name"),
    ({"weight_dict": {"loss_mal": "one"}}, "criterion.weight_dict.loss_mal", "finite number >= 0, got 'one'"),
    ({"matcher": {"type": "HungarianMatcher", "weight_dict": {"cost_class": 2, "cost_bbox": 5, "cost_gio": 2}}},
     "criterion.matcher.weight_dict", "takes exactly cost_class, cost_bbox, cost_giou"),
    ({"matcher": {"type": "HungarianMatcher", "weight_dict": {"cost_class": float("nan"), "cost_bbox": 5,
                                                              "cost_giou": 2}}},
     "criterion.matcher.weight_dict.cost_class", "finite number >= 0, got nan"),
])
def test_weights_name_real_terms_and_are_numbers(edit, where, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_criterion({**DEIM_RECIPE, **edit})
    assert err.value.where == where
    # a weight for a term the losses do not compute may stay: included recipes merge key by key
    build_criterion({**DEIM_RECIPE, "weight_dict": {**DEIM_RECIPE["weight_dict"], "loss_vfl": 1}})


def _rank_worker(rank, world, init_file, results):
    import torch.distributed as dist

    from models.criterion.set_criterion import average_over_ranks
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results.put((rank, float(average_over_ranks([2, 6][rank], torch.device("cpu")))))
    dist.destroy_process_group()


def test_num_boxes_is_averaged_over_ranks(tmp_path):
    import multiprocessing
    context = multiprocessing.get_context("fork")  # fork: no second torch import, so it takes a second
    results = context.Queue()
    workers = [context.Process(target=_rank_worker, args=(rank, 2, str(tmp_path / "init"), results))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert dict(results.get(timeout=5) for _ in workers) == {0: 4.0, 1: 4.0}  # (2 + 6) / 2 on both ranks
