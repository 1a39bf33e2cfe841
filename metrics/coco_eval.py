"""Detection evaluation: COCO AP with pycocotools; per-class AP, YOLO-style P/R/F1 and the confusion
matrix come from metrics.detection.

Predictions arrive as the post-processor's per-image `labels` (contiguous 0..nc-1), `boxes` (xyxy
pixels of the original image) and `scores`; labels are mapped to the dataset's own category ids
before COCOeval, so the predictions JSON is valid for the original annotation file.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import time
from pathlib import Path

import torch

from metrics.detection import per_class_table, yolo_metrics
from core import dist

STAT_NAMES = ["AP50:95", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def to_coco_json(image_id: int, result: dict, category_ids: list[int]) -> list[dict]:
    boxes = result["boxes"].detach().float().cpu()
    scores = result["scores"].detach().float().cpu().tolist()
    labels = result["labels"].detach().cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [{"image_id": int(image_id), "category_id": int(category_ids[label]), "bbox": [round(v, 3) for v in box],
             "score": round(score, 5)} for box, score, label in zip(xywh, scores, labels)]


class CocoEvaluator:
    def __init__(self, coco, category_ids: list[int], names: list[str]):
        self.coco = coco
        self.category_ids = list(category_ids)
        self.names = list(names)
        self.results: dict[int, list[dict]] = {}  # image id -> its detections (COCO json)
        self.cocoeval = None
        self.dropped = 0  # non-finite detections left out

    @property
    def detections(self) -> list[dict]:
        return [d for image_id in sorted(self.results) for d in self.results[image_id]]

    def reset(self) -> None:
        self.results, self.cocoeval, self.dropped = {}, None, 0

    def update(self, results: dict[int, dict]) -> None:
        """Add per-image results; a detection with a non-finite box or score is dropped and counted
        (NaN boxes would otherwise match as hits and inflate AP)."""
        for image_id, result in results.items():
            finite = torch.isfinite(result["boxes"]).all(-1) & torch.isfinite(result["scores"])
            if not bool(finite.all()):
                self.dropped += int((~finite).sum())
                result = {k: v[finite] for k, v in result.items()}
            self.results[int(image_id)] = to_coco_json(image_id, result, self.category_ids)

    def synchronize(self) -> None:
        """Collect every rank's detections; an image a padded sampler gave two ranks counts once."""
        if dist.enabled():
            for part in dist.gather_objects(self.results):
                for image_id, dets in part.items():
                    self.results.setdefault(image_id, dets)
            self.dropped = sum(dist.gather_objects(self.dropped))

    def evaluate(self, verbose: bool = True) -> dict:
        """Run COCOeval; return {'stats': 12 numbers, 'per_class': [...], 'yolo': {...}}."""
        from pycocotools.cocoeval import COCOeval

        image_ids = sorted(self.results)
        detections = self.detections
        if not detections:
            self.cocoeval = None
            return {"stats": [0.0] * 12, "per_class": [], "yolo": {}, "summary": "no detections",
                    "dropped": self.dropped}
        with contextlib.redirect_stdout(io.StringIO()):
            detections = self.coco.loadRes(copy.deepcopy(detections))
        cocoeval = COCOeval(self.coco, detections, "bbox")
        cocoeval.params.imgIds = image_ids
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            cocoeval.evaluate()
            cocoeval.accumulate()
            cocoeval.summarize()
        if verbose:
            print(_summary_lines(buffer.getvalue()))
        self.cocoeval = cocoeval
        return {"stats": [float(v) for v in cocoeval.stats], "per_class": per_class_table(cocoeval, self),
                "yolo": yolo_metrics(cocoeval), "summary": _summary_lines(buffer.getvalue()), "dropped": self.dropped}

    def save_predictions(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.detections))


def _summary_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.lstrip().startswith("Average"))


@torch.no_grad()
def measure_speed(model, postprocessor, imgsz, device, runs: int = 20, warmup: int = 3) -> dict:
    """Milliseconds per image (batch 1) for the forward pass and for post-processing."""
    model.eval()
    image = torch.rand(1, 3, *imgsz, device=device)
    sizes = torch.tensor([[imgsz[1], imgsz[0]]], device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        postprocessor(model(image), sizes)
    forward = post = 0.0
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        outputs = model(image)
        sync()
        middle = time.perf_counter()
        postprocessor(outputs, sizes)
        sync()
        forward += middle - start
        post += time.perf_counter() - middle
    forward_ms, post_ms = 1000 * forward / runs, 1000 * post / runs
    return {"forward_ms": forward_ms, "postprocess_ms": post_ms, "fps": 1000 / (forward_ms + post_ms)}


def model_stats(model, imgsz) -> dict:
    """Params, size in MB (fp32 weights) and GFLOPs of the deploy form at `imgsz`."""
    from metrics.flops import count_flops, count_params, deployed_copy

    deployed = deployed_copy(model).cpu()
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2 ** 20
    profile = count_flops(deployed, torch.zeros(1, 3, *imgsz))
    return {"params": count_params(model), "params_deploy": profile.params, "size_mb": size, "gflops": profile.gflops}
