import itertools
import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from models.criterion import HungarianMatcher, TargetError
from models.criterion.matcher import denoising_indices, union_indices

WEIGHTS = {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2}


def random_case(queries, num_targets, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(1, queries, classes, generator=g),
               "pred_boxes": torch.rand(1, queries, 4, generator=g) * 0.5 + 0.2}
    targets = [{"labels": torch.randint(0, classes, (num_targets,), generator=g),
                "boxes": torch.rand(num_targets, 4, generator=g) * 0.5 + 0.2, "image_id": torch.tensor(0)}]
    return outputs, targets


def test_assignment_equals_scipy_on_the_same_cost():
    matcher = HungarianMatcher(WEIGHTS)
    outputs, targets = random_case(30, 7)
    cost = matcher.cost(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"], targets[0]["boxes"])
    rows, cols = linear_sum_assignment(cost.numpy())
    (got_rows, got_cols), = matcher(outputs, targets)
    assert got_rows.tolist() == rows.tolist() and got_cols.tolist() == cols.tolist()


def test_assignment_is_the_cheapest_injective_map_by_brute_force():
    matcher = HungarianMatcher(WEIGHTS)
    outputs, targets = random_case(5, 3, seed=3)
    cost = matcher.cost(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"],
                        targets[0]["boxes"]).numpy()
    best = min(sum(cost[q, t] for t, q in enumerate(queries)) for queries in itertools.permutations(range(5), 3))
    (rows, cols), = matcher(outputs, targets)
    assert sorted(cols.tolist()) == [0, 1, 2] and len(set(rows.tolist())) == 3
    assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(best, rel=1e-6)


def test_focal_class_cost_by_hand():
    # one query with p = sigmoid(0) = 0.5 against a class-0 target on the identical box: L1 = 0, GIoU = 1
    matcher = HungarianMatcher(WEIGHTS, alpha=0.25, gamma=2.0)
    cost = matcher.cost(torch.zeros(1, 2), torch.tensor([[0.5, 0.5, 0.2, 0.2]]), torch.tensor([0]),
                        torch.tensor([[0.5, 0.5, 0.2, 0.2]]))
    positive = 0.25 * 0.5 ** 2 * -math.log(0.5 + 1e-8)
    negative = 0.75 * 0.5 ** 2 * -math.log(0.5 + 1e-8)
    assert cost.item() == pytest.approx(2 * (positive - negative) + 5 * 0 + 2 * -1.0, rel=1e-6)


def test_iou_ordered_cost_switches_on_at_the_configured_epoch():
    # target (0.5, 0.5, 0.2, 0.2) class 0. Query 0: exact box, p = 0.3. Query 1: box shifted by 1/15
    # (IoU 0.5), p = 0.9. Focal/L1/GIoU cost: q0 = 2*0.123 + 0 - 2 = -1.75, q1 = 2*(-1.40) + 0.33 - 1 = -3.46
    # -> query 1. IoU-ordered cost -p * IoU^4: q0 = -0.3, q1 = -0.9 / 16 = -0.056 -> query 0.
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    outputs = {"pred_logits": torch.tensor([[[logit(0.3)], [logit(0.9)]]]),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5 + 1 / 15, 0.5, 0.2, 0.2]]])}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    matcher = HungarianMatcher(WEIGHTS, change_matcher=True, iou_order_alpha=4.0, matcher_change_epoch=45)
    assert matcher(outputs, targets, epoch=44)[0][0].tolist() == [1]
    assert matcher(outputs, targets, epoch=45)[0][0].tolist() == [0]
    assert matcher(outputs, targets, epoch=90)[0][0].tolist() == [0]
    # the switch is off unless change_matcher is set
    assert HungarianMatcher(WEIGHTS, matcher_change_epoch=0)(outputs, targets, epoch=45)[0][0].tolist() == [1]
    cost = matcher.cost(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"],
                        targets[0]["boxes"], epoch=45)
    assert cost[:, 0].tolist() == pytest.approx([-0.3, -0.9 * 0.5 ** 4], rel=1e-4)


def test_more_targets_than_queries_matches_every_query_once():
    outputs, targets = random_case(5, 8)
    (rows, cols), = HungarianMatcher(WEIGHTS)(outputs, targets)
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4] and len(set(cols.tolist())) == 5


def test_image_without_targets_matches_nothing():
    outputs, targets = random_case(5, 0)
    (rows, cols), = HungarianMatcher(WEIGHTS)(outputs, targets)
    assert rows.numel() == 0 and cols.numel() == 0


def test_degenerate_and_nan_predictions_still_match():
    outputs, targets = random_case(6, 3)
    outputs["pred_boxes"][0, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0])
    outputs["pred_boxes"][0, 1] = float("nan")
    targets[0]["boxes"][0, 2:] = 0.0
    (rows, cols), = HungarianMatcher(WEIGHTS)(outputs, targets)
    assert sorted(cols.tolist()) == [0, 1, 2]


def test_class_id_out_of_range_is_reported_before_indexing():
    outputs, targets = random_case(6, 2, classes=4)
    targets[0]["labels"] = torch.tensor([1, 9])
    with pytest.raises(TargetError, match="class id 9"):
        HungarianMatcher(WEIGHTS)(outputs, targets)


def test_denoising_indices_repeat_targets_per_group():
    # 2 groups, max 2 targets: image 0 has 2 targets (positives at 0,1 and 4,5), image 1 has one (0 and 4)
    dn_meta = {"dn_positive_idx": [torch.tensor([0, 1, 4, 5]), torch.tensor([0, 4])], "dn_num_group": 2}
    targets = [{"labels": torch.tensor([0, 1])}, {"labels": torch.tensor([2])}]
    (q0, t0), (q1, t1) = denoising_indices(dn_meta, targets)
    assert q0.tolist() == [0, 1, 4, 5] and t0.tolist() == [0, 1, 0, 1]
    assert q1.tolist() == [0, 4] and t1.tolist() == [0, 0]


def test_union_keeps_the_target_most_layers_agreed_on():
    pair = lambda q, t: [(torch.tensor(q), torch.tensor(t))]  # noqa: E731
    layers = [pair([0, 1], [0, 1]), pair([0, 2], [1, 0]), pair([0, 3], [1, 0])]
    (rows, cols), = union_indices(layers)
    got = dict(zip(rows.tolist(), cols.tolist()))
    # query 0: target 1 twice vs target 0 once; queries 1, 2, 3 each matched by one layer
    assert got == {0: 1, 1: 1, 2: 0, 3: 0}


def test_union_of_empty_matchings_is_empty():
    empty = [(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))]
    (rows, cols), = union_indices([empty, empty])
    assert rows.numel() == 0 and cols.numel() == 0
