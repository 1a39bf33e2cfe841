"""Inference on image files with a trained detector (or an exported one): the evaluation
preprocessing, detection, and boxes mapped back to the original pixels.

`Predictor(model, postprocessor, preprocessing, device, conf, names)(pil_image)` returns the
detections of one image as [{label, class, score, box (xyxy, original pixels)}]; predict.py, the
analysis commands and export's checks share it."""
from __future__ import annotations

from pathlib import Path

import torch

from core.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def collect_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"input not found: {path}", where="-i", hint="an image, a video or a folder of them")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not images and not videos:
        raise ConfigError(f"no images or videos in {path}", where="-i",
                          hint=f"supported: {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}")
    return images, videos


class Predictor:
    """`postprocessor=None` means `model` already ends in the post-processor and returns the
    (labels, boxes, scores) tuple, as an exported file run by `engine.onnx_runtime.OnnxDetector` does."""

    def __init__(self, model, postprocessor, preprocessing: dict, device, conf: float, names: list[str]):
        self.model, self.postprocessor, self.pre = model, postprocessor, preprocessing
        self.device, self.conf, self.names = device, conf, names

    def detect(self, images: torch.Tensor, sizes: torch.Tensor) -> dict:
        """Detections of the first image: labels, boxes (xyxy, network-input pixels), scores."""
        if self.postprocessor is None:
            labels, boxes, scores = self.model(images, sizes)
            return {"labels": labels[0], "boxes": boxes[0], "scores": scores[0]}
        return self.postprocessor(self.model(images.to(self.device)), sizes.to(self.device))[0]

    @torch.no_grad()
    def __call__(self, pil_image) -> list[dict]:
        from data.transforms import preprocess_image, restore_boxes

        tensor, info = preprocess_image(pil_image, self.pre["imgsz"], self.pre["letterbox"], self.pre["normalize"])
        height, width = tensor.shape[1:]
        result = self.detect(tensor[None], torch.tensor([[width, height]]))
        keep = result["scores"] >= self.conf
        boxes = restore_boxes(result["boxes"][keep].float().cpu(), info["scale"], info["pad"], info["orig_size"])
        return [{"label": int(label), "class": self.name(int(label)), "score": round(float(score), 4),
                 "box": [round(v, 1) for v in box]}
                for label, score, box in zip(result["labels"][keep].tolist(), result["scores"][keep].tolist(),
                                             boxes.tolist())]

    def name(self, label: int) -> str:
        return self.names[label] if label < len(self.names) else str(label)
