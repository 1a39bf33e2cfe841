"""TIDE: A General Toolbox for Identifying Object Detection Errors. ECCV 2020. https://arxiv.org/abs/2008.08115

Splits the AP gap at IoU 0.5 into six error types, each reported as the AP gained by fixing only that
type (dAP): Cls (right box, wrong class), Loc (right class, IoU between the background threshold 0.1 and
0.5), Both (wrong class and poorly localised), Dupe (a second detection of a matched box), Bkg (IoU <= 0.1
with every box), Miss (boxes no detection explains); and two special ones: FalsePos (AP with every
false positive scored 0) and FalseNeg (AP with every missed box removed). Definitions, thresholds and
the 101-point COCO AP follow the reference `tidecv`; this implementation works on box-only COCO files
with any category ids and is vectorised per image.

The command line is `python -m analyze.tide --gt ANN.json --pred RESULTS.json [--out DIR] [--json]`.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.drawing import plot_fonts
from core.errors import ArgumentError, DataError
from data.validate import check_structure, load_json

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
_RECALL_POINTS = np.arange(101) / 100  # exactly k/100, as COCO samples recall (linspace differs in the last bit)


@dataclass
class TideResult:
    ap50: float                                  # mAP at the positive threshold, in percent
    main: dict[str, float]                       # dAP per main error type
    special: dict[str, float]                    # dAP of FalsePos / FalseNeg
    counts: dict[str, int] = field(default_factory=dict)
    pos_thresh: float = 0.5                      # the IoU of a true positive, which `ap50` is measured at

    def as_dict(self) -> dict:
        return {"AP50": self.ap50, "pos_thresh": self.pos_thresh, "main": self.main, "special": self.special,
                "counts": self.counts}

    def summary(self) -> str:
        def row(names, values):
            return "  ".join(f"{n:>8}" for n in names) + "\n" + "  ".join(f"{v:8.2f}" for v in values)

        return (f"TIDE  bbox AP @ {100 * self.pos_thresh:g}: {self.ap50:.2f}\n"
                f"main errors (dAP)\n{row(MAIN_ERRORS, [self.main[k] for k in MAIN_ERRORS])}\n"
                f"special errors (dAP)\n{row(SPECIAL_ERRORS, [self.special[k] for k in SPECIAL_ERRORS])}")


def box_iou_xywh(dets: np.ndarray, gts: np.ndarray, crowd: bool = False) -> np.ndarray:
    """IoU of [x, y, w, h] boxes, [D, G]; with crowd=True the union is the detection's area (COCO)."""
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    d_x2, d_y2 = dets[:, 0] + dets[:, 2], dets[:, 1] + dets[:, 3]
    g_x2, g_y2 = gts[:, 0] + gts[:, 2], gts[:, 1] + gts[:, 3]
    inter_w = np.minimum(d_x2[:, None], g_x2[None]) - np.maximum(dets[:, None, 0], gts[None, :, 0])
    inter_h = np.minimum(d_y2[:, None], g_y2[None]) - np.maximum(dets[:, None, 1], gts[None, :, 1])
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    d_area = (dets[:, 2] * dets[:, 3])[:, None]
    union = np.broadcast_to(d_area, inter.shape) if crowd else d_area + (gts[:, 2] * gts[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class _Collector:
    """Accumulates AP data points, errors and false negatives over all images."""

    def __init__(self):
        # data points (detections that count for AP): class, score, true positive
        self.cls, self.score, self.tp = [], [], []
        # errors of detections: type, index of its data point (-1: an ignored detection), fixed class (or None)
        self.err_type, self.err_point, self.err_fix_cls, self.err_score = [], [], [], []
        self.missed_cls = []                       # classes of Miss errors
        self.gt_count = defaultdict(int)           # non-crowd boxes per class
        self.fn_count = defaultdict(int)           # unmatched boxes per class (FalseNeg)

    def point(self, cls, score, tp) -> int:
        self.cls.append(cls), self.score.append(score), self.tp.append(tp)
        return len(self.cls) - 1

    def error(self, kind, point, fix_cls, score):
        self.err_type.append(kind), self.err_point.append(point)
        self.err_fix_cls.append(fix_cls), self.err_score.append(score)


def _evaluate_image(col: _Collector, det_boxes, det_cls, det_scores, gt_boxes, gt_cls, gt_crowd,
                    pos: float, bg: float, max_dets: int):
    keep = ~gt_crowd
    boxes, classes = gt_boxes[keep], gt_cls[keep]
    crowd_boxes, crowd_cls = gt_boxes[gt_crowd], gt_cls[gt_crowd]
    for c in classes:
        col.gt_count[int(c)] += 1
    if len(det_scores) == 0:
        for c in classes:
            col.fn_count[int(c)] += 1
            col.missed_cls.append(int(c))
        return

    order = np.argsort(-det_scores, kind="stable")[:max_dets]
    det_boxes, det_cls, det_scores = det_boxes[order], det_cls[order], det_scores[order]
    num_det, num_gt = len(det_scores), len(classes)
    iou = box_iou_xywh(det_boxes, boxes)
    same_cls = det_cls[:, None] == classes[None, :]
    cls_iou = iou * same_cls

    # greedy matching in score order; a detection whose best same-class IoU is below the threshold
    # can never match, so only the candidates are visited
    used = np.zeros(num_det, dtype=object)       # True / False / None (ignored by a crowd region)
    used[:] = False
    gt_used = np.zeros(num_gt, dtype=bool)
    if num_gt:
        buffer = cls_iou.copy()
        for d in np.flatnonzero(cls_iou.max(1) >= pos):
            g = int(np.argmax(buffer[d]))
            if buffer[d, g] >= pos:
                used[d], gt_used[g] = True, True
                buffer[:, g] = 0
    for region, region_cls in zip(crowd_boxes, crowd_cls):
        crowd_iou = box_iou_xywh(det_boxes, region[None], crowd=True)[:, 0]
        for d in np.flatnonzero((crowd_iou > pos) & (det_cls == region_cls)):
            if used[d] is False:
                used[d] = None

    point = np.full(num_det, -1)
    for d in range(num_det):
        if used[d] is not None:
            point[d] = col.point(int(det_cls[d]), float(det_scores[d]), bool(used[d]))

    gt_usable = np.zeros(num_gt, dtype=bool)
    best_for_gt: dict[int, int] = {}             # gt index -> error index of its best-scoring fixable error
    candidates: list[int] = []                   # every Cls/Loc error that points at an unmatched box
    if num_gt:
        noncls_iou = iou * ~same_cls
        used_cls_iou = cls_iou * gt_used[None]
    for d in np.flatnonzero(used != True):  # noqa: E712 (False and None: both are errors)
        score = float(det_scores[d])
        if num_gt == 0:
            col.error("Bkg", point[d], None, score)
            continue
        g = int(np.argmax(cls_iou[d]))
        if bg <= cls_iou[d, g] <= pos:
            kind, target, fix_cls = "Loc", g, int(det_cls[d])
        else:
            g = int(np.argmax(noncls_iou[d]))
            if noncls_iou[d, g] >= pos:
                kind, target, fix_cls = "Cls", g, int(classes[g])
            elif used_cls_iou[d].max() >= pos:
                col.error("Dupe", point[d], None, score)
                continue
            elif iou[d].max() <= bg:
                col.error("Bkg", point[d], None, score)
                continue
            else:
                col.error("Both", point[d], None, score)
                continue
        # Cls/Loc errors fix to a true positive, but only one per box: the best-scoring one
        if gt_used[target]:
            col.error(kind, point[d], None, score)
            continue
        gt_usable[target] = True
        col.error(kind, point[d], fix_cls, score)
        candidates.append(len(col.err_type) - 1)
        if target not in best_for_gt:  # detections arrive in descending score order
            best_for_gt[target] = len(col.err_type) - 1
    for index in candidates:
        if index not in best_for_gt.values():
            col.err_fix_cls[index] = None  # another detection fixes this box
    for g in np.flatnonzero(~gt_used):
        col.fn_count[int(classes[g])] += 1
        if not gt_usable[g]:
            col.missed_cls.append(int(classes[g]))


def _mean_ap(cls: np.ndarray, score: np.ndarray, tp: np.ndarray, gt_count: dict[int, int]) -> float:
    """COCO 101-point AP per class, averaged over classes that have detections or boxes."""
    aps = []
    for c in sorted(set(gt_count) | set(np.unique(cls).tolist())):
        members = cls == c
        n_gt = gt_count.get(c, 0)
        if not members.any() and n_gt == 0:
            continue
        if n_gt == 0 or not members.any():  # no boxes to find, or nothing found: AP 0
            aps.append(0.0)
            continue
        order = np.argsort(-score[members], kind="stable")
        hits = tp[members][order]
        true_cum = np.cumsum(hits)
        precision = true_cum / np.arange(1, len(hits) + 1)
        recall = true_cum / n_gt
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # remove dips, as COCOeval does
        index = np.searchsorted(recall, _RECALL_POINTS, side="left")
        sampled = np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0)
        aps.append(sampled.mean() * 100)
    return float(np.mean(aps)) if aps else 0.0


def _load(source, kind: str):
    return load_json(source) if isinstance(source, (str, Path)) else source


def check_predictions(preds, where: str = "predictions") -> None:
    """A COCO results list: mappings with image_id, category_id, a 4-number bbox and a score."""
    if isinstance(preds, dict):
        raise DataError("predictions must be a COCO results list, got a mapping (an annotation file?)", where=where,
                        hint="pass the predictions.json that --test-only writes as --pred, the annotations as --gt")
    if not isinstance(preds, list):
        raise DataError(f"predictions must be a COCO results list, got {type(preds).__name__}", where=where)
    for i, det in enumerate(preds):
        bbox = det.get("bbox") if isinstance(det, dict) else None
        if not (isinstance(det, dict) and "image_id" in det and "category_id" in det
                and isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*bbox, det.get("score")])):
            raise DataError(f"detection {i} is not {{image_id, category_id, bbox: [x, y, w, h], score}}: "
                            f"{str(det)[:80]}", where=f"{where}[{i}]", hint="pass a COCO results file")


def check_thresholds(pos_thresh: float, bg_thresh: float, max_dets: int) -> None:
    if not 0 < bg_thresh <= pos_thresh <= 1:
        raise ArgumentError(f"the IoU thresholds must satisfy 0 < bg_thresh <= pos_thresh <= 1, got pos_thresh "
                            f"{pos_thresh} and bg_thresh {bg_thresh}", where="--pos-thresh/--bg-thresh",
                            hint="TIDE's defaults are 0.5 and 0.1")
    if max_dets < 1:
        raise ArgumentError(f"max_dets must be 1 or more, got {max_dets}", where="--max-dets", hint="COCO uses 100")


def check_predictions_fit(gt: dict, preds: list, pred_name: str, known_categories: bool = True) -> None:
    """The results must belong to this annotation file: every image id one of its images and (with
    `known_categories`) every category id one of its categories: 0-based labels or another split's
    file would be scored as background and class errors, a silently wrong breakdown."""
    if not preds:
        raise DataError("the predictions file holds no detections", where=pred_name,
                        hint="pass the predictions.json that --test-only writes")
    image_ids = {image["id"] for image in gt.get("images", [])}
    category_ids = {category["id"] for category in gt.get("categories", [])}
    checks = [("image_id", image_ids, "images")] + [("category_id", category_ids, "categories")] * known_categories
    for key, known, what in checks:
        unknown = sorted({det[key] for det in preds if det[key] not in known}, key=str)
        if unknown:
            count = sum(det[key] not in known for det in preds)
            raise DataError(f"in {count} of {len(preds)} detections the {key} is not one of the annotation file's "
                            f"{what}: {', '.join(map(repr, unknown[:5]))}", where=pred_name,
                            hint="pass the annotation file of the split the predictions were made on (and "
                                 "category ids, not 0-based labels)")


def evaluate(gt, preds, pos_thresh: float = 0.5, bg_thresh: float = 0.1, max_dets: int = 100,
             known_categories: bool = True) -> TideResult:
    """TIDE on a COCO ground-truth dict/path and a COCO results list/path (boxes only is fine); every
    detection's image must be the annotation file's, and its category too unless `known_categories` is
    off (a model trained on the union of the splits' categories predicts some this split lacks)."""
    check_thresholds(pos_thresh, bg_thresh, max_dets)
    gt_name, pred_name = (str(x) if isinstance(x, (str, Path)) else kind
                          for x, kind in ((gt, "ground truth"), (preds, "predictions")))
    gt, preds = _load(gt, "ground truth"), _load(preds, "predictions")
    check_structure(gt, gt_name)
    check_predictions(preds, pred_name)
    check_predictions_fit(gt, preds, pred_name, known_categories)
    index = {c: i for i, c in enumerate(dict.fromkeys([*(a["category_id"] for a in gt.get("annotations", [])),
                                                        *(d["category_id"] for d in preds)]))}
    gt_by_image = defaultdict(list)
    for ann in gt.get("annotations", []):
        gt_by_image[ann["image_id"]].append(ann)
    det_by_image = defaultdict(list)
    for det in preds:
        det_by_image[det["image_id"]].append(det)

    col = _Collector()
    for image in gt.get("images", []):
        anns, dets = gt_by_image.get(image["id"], []), det_by_image.get(image["id"], [])
        _evaluate_image(
            col,
            np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4),
            np.array([index[d["category_id"]] for d in dets], dtype=np.int64),
            np.array([d["score"] for d in dets], dtype=np.float64),
            np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
            np.array([index[a["category_id"]] for a in anns], dtype=np.int64),
            np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            pos_thresh, bg_thresh, max_dets)
    return replace(_summarise(col), pos_thresh=pos_thresh)


def _summarise(col: _Collector) -> TideResult:
    cls, score, tp = np.array(col.cls, dtype=np.int64), np.array(col.score), np.array(col.tp, dtype=bool)
    err_type = np.array(col.err_type, dtype=object)
    err_point = np.array(col.err_point, dtype=np.int64)
    err_fix = np.array([-1 if c is None else c for c in col.err_fix_cls], dtype=np.int64)
    err_score = np.array(col.err_score)
    base = _mean_ap(cls, score, tp, col.gt_count)

    main = {}
    for kind in MAIN_ERRORS:
        if kind == "Miss":
            counts = dict(col.gt_count)
            for c in col.missed_cls:
                counts[c] -= 1
            fixed = _mean_ap(cls, score, tp, counts)
        else:
            of_kind = err_type == kind
            drop = np.zeros(len(cls), dtype=bool)
            drop[err_point[of_kind & (err_point >= 0)]] = True
            repaired = of_kind & (err_fix >= 0)
            fixed = _mean_ap(np.concatenate([err_fix[repaired], cls[~drop]]),
                             np.concatenate([err_score[repaired], score[~drop]]),
                             np.concatenate([np.ones(repaired.sum(), dtype=bool), tp[~drop]]), col.gt_count)
        main[kind] = max(fixed - base, 0.0)  # a negative gain is a binning artefact (as in tidecv)

    special = {
        "FalsePos": _mean_ap(cls, tp.astype(np.float64), tp, col.gt_count) - base,
        "FalseNeg": _mean_ap(cls, score, tp, {c: n - col.fn_count.get(c, 0) for c, n in col.gt_count.items()}) - base,
    }
    counts = {kind: int((err_type == kind).sum()) for kind in MAIN_ERRORS[:-1]}
    counts["Miss"] = len(col.missed_cls)
    return TideResult(base, main, special, counts)


@plot_fonts()
def plot(result: TideResult, path: str | Path, title: str = "TIDE"):
    """Pie of the main errors' share and bars of every dAP, saved as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (pie, bars) = plt.subplots(1, 2, figsize=(11, 4.5))
    values = [result.main[k] for k in MAIN_ERRORS]
    colors = plt.cm.tab10(np.arange(len(MAIN_ERRORS) + len(SPECIAL_ERRORS)))
    if sum(values) > 0:
        pie.pie(values, labels=MAIN_ERRORS, colors=colors[: len(MAIN_ERRORS)], autopct="%1.0f%%", startangle=90)
    pie.set_title(f"{title}: main errors (AP50 {result.ap50:.1f})")
    names = [*MAIN_ERRORS, *SPECIAL_ERRORS]
    heights = [*values, *(result.special[k] for k in SPECIAL_ERRORS)]
    bars.barh(names[::-1], heights[::-1], color=colors[::-1])
    bars.set_xlabel("dAP")
    bars.set_title("AP gained by fixing each error type")
    for y, h in enumerate(heights[::-1]):
        bars.text(h, y, f" {h:.2f}", va="center")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
