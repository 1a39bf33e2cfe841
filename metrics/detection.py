"""Detection metrics a paper reports, as library functions (the trainer's evaluator calls them):
per-class AP/AP50/AP75/APs/APm/APl from COCOeval, YOLO-style P/R/F1/mAP, and the confusion matrix.

The YOLO-style numbers reuse COCOeval's per-image matching (greedy by score, crowd-aware) and
compute, per class, the precision/recall curve over confidence: P, R and F1 are read at the
confidence that maximises the class-mean F1, and mAP uses the 101-point interpolated envelope at
IoU 0.50, 0.75 and the mean over 0.50:0.95 (as Ultralytics reports them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.drawing import plot_fonts
from core.text import fit
from metrics.tide import box_iou_xywh


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def per_class_table(cocoeval, evaluator) -> list[dict]:
    """AP, AP50, AP75, APs, APm, APl per class from COCOeval's precision array [T, R, K, A, M]."""
    precision = cocoeval.eval["precision"]
    ious = list(np.round(cocoeval.params.iouThrs, 2))
    rows = []
    for k, cat_id in enumerate(cocoeval.params.catIds):
        label = evaluator.category_ids.index(cat_id) if cat_id in evaluator.category_ids else None
        name = evaluator.names[label] if label is not None else str(cat_id)
        row = {"class": name, "category_id": int(cat_id),
               "AP": _mean_valid(precision[:, :, k, 0, -1]),
               "AP50": _mean_valid(precision[ious.index(0.5), :, k, 0, -1]),
               "AP75": _mean_valid(precision[ious.index(0.75), :, k, 0, -1]),
               "APs": _mean_valid(precision[:, :, k, 1, -1]),
               "APm": _mean_valid(precision[:, :, k, 2, -1]),
               "APl": _mean_valid(precision[:, :, k, 3, -1])}
        row["instances"] = len(cocoeval.cocoGt.getAnnIds(catIds=[cat_id], imgIds=cocoeval.params.imgIds, iscrowd=False))
        rows.append(row)
    return rows


def format_per_class(rows: list[dict]) -> str:
    lines = [f"{'class':<20}{'inst':>6}{'AP':>8}{'AP50':>8}{'AP75':>8}{'APs':>8}{'APm':>8}{'APl':>8}"]
    for r in rows:
        cells = "".join(f"{r[k]:>8.3f}" if r[k] == r[k] else f"{'-':>8}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
        lines.append(f"{fit(r['class'], 19)} {r['instances']:>6}{cells}")  # by display width: CJK names take 2 columns
    return "\n".join(lines)


def _interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, sampled at 101 recall points (COCO/Ultralytics style)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


def yolo_metrics(cocoeval) -> dict:
    """Ultralytics-style P, R, F1 (at the best mean-F1 confidence), mAP50, mAP75, mAP50-95."""
    params = cocoeval.params
    n_iou = len(params.iouThrs)
    n_area, n_img = len(params.areaRng), len(params.imgIds)
    grid = np.linspace(0, 1, 1000)
    curves_p, curves_r, aps = [], [], []
    for k in range(len(params.catIds)):
        scores, matched, n_gt = [], [], 0
        for i in range(n_img):
            entry = cocoeval.evalImgs[k * n_area * n_img + i]  # area index 0 = all
            if entry is None:
                continue
            keep = ~entry["dtIgnore"][0].astype(bool)
            scores.append(np.asarray(entry["dtScores"])[keep])
            matched.append(entry["dtMatches"][:, keep] > 0)
            n_gt += int((~entry["gtIgnore"].astype(bool)).sum())
        if n_gt == 0:
            continue
        scores = np.concatenate(scores) if scores else np.zeros(0)
        matched = np.concatenate(matched, axis=1) if matched else np.zeros((n_iou, 0), bool)
        order = np.argsort(-scores, kind="mergesort")
        scores, matched = scores[order], matched[:, order]
        tp = np.cumsum(matched, axis=1)
        fp = np.cumsum(~matched, axis=1)
        recall = tp / n_gt
        precision = tp / np.maximum(tp + fp, 1)
        aps.append([_interpolated_ap(recall[t], precision[t]) if scores.size else 0.0 for t in range(n_iou)])
        if scores.size:  # P and R as functions of the confidence threshold, at IoU 0.50
            curves_p.append(np.interp(-grid, -scores, precision[0], left=1.0))
            curves_r.append(np.interp(-grid, -scores, recall[0], left=0.0))
        else:
            curves_p.append(np.zeros_like(grid))
            curves_r.append(np.zeros_like(grid))
    if not aps:
        return {}
    p, r = np.mean(curves_p, axis=0), np.mean(curves_r, axis=0)
    f1_per_class = 2 * np.array(curves_p) * np.array(curves_r) / np.maximum(np.array(curves_p) + np.array(curves_r), 1e-16)
    best = int(np.argmax(f1_per_class.mean(axis=0)))
    aps = np.array(aps)
    ious = list(np.round(params.iouThrs, 2))
    return {"precision": float(p[best]), "recall": float(r[best]), "f1": float(f1_per_class.mean(axis=0)[best]),
            "confidence": float(grid[best]), "mAP50": float(aps[:, ious.index(0.5)].mean()),
            "mAP75": float(aps[:, ious.index(0.75)].mean()), "mAP50-95": float(aps.mean())}


def confusion_matrix(coco, detections: list[dict], category_ids: list[int], conf: float = 0.25,
                     iou_threshold: float = 0.45) -> np.ndarray:
    """[(nc+1) x (nc+1)] counts, rows = predicted class, columns = true class, last = background."""
    nc = len(category_ids)
    index = {c: i for i, c in enumerate(category_ids)}
    matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    by_image: dict[int, list] = {}
    for d in detections:
        if d["score"] >= conf and d["category_id"] in index:
            by_image.setdefault(d["image_id"], []).append(d)
    for image_id in coco.getImgIds():
        gts = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)) if a["category_id"] in index]
        dts = by_image.get(image_id, [])
        gt_cls = np.array([index[a["category_id"]] for a in gts], dtype=np.int64)
        dt_cls = np.array([index[d["category_id"]] for d in dts], dtype=np.int64)
        matched_gt, matched_dt = set(), set()
        if gts and dts:
            ious = box_iou_xywh(np.array([a["bbox"] for a in gts], dtype=np.float64),
                                np.array([d["bbox"] for d in dts], dtype=np.float64))
            pairs = np.argwhere(ious >= iou_threshold)
            pairs = pairs[np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="mergesort")]
            for g, d in pairs:
                if g in matched_gt or d in matched_dt:
                    continue
                matched_gt.add(g)
                matched_dt.add(d)
                matrix[dt_cls[d], gt_cls[g]] += 1
        for g in range(len(gts)):
            if g not in matched_gt:
                matrix[nc, gt_cls[g]] += 1
        for d in range(len(dts)):
            if d not in matched_dt:
                matrix[dt_cls[d], nc] += 1
    return matrix


@plot_fonts()
def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*names, "background"]
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    if len(labels) <= 30:
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
