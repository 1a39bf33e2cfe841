"""Inference on image files with a trained detector (or an exported one): the evaluation
preprocessing, detection, and boxes mapped back to the original pixels.

`Predictor(model, postprocessor, preprocessing, device, conf, names)(pil_image)` returns the
detections of one image as [{label, class, score, box (xyxy, original pixels)}]; predict.py, the
analysis commands and export's checks share it."""
from __future__ import annotations

from collections import Counter
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


def annotated_names(images: list[Path], videos: list[Path]) -> dict[Path, str]:
    """Each input's annotated file name in the output folder: its stem with .jpg (.mp4 for videos), or,
    where two inputs share a stem (x.jpg and x.png), its whole name with the dot as `_` (x_jpg.jpg,
    x_png.jpg), so that neither replaces the other."""
    named = [(path, ".jpg") for path in images] + [(path, ".mp4") for path in videos]
    counts = Counter(path.stem + suffix for path, suffix in named)
    return {path: (path.stem if counts[path.stem + suffix] == 1 else path.name.replace(".", "_")) + suffix
            for path, suffix in named}


def check_output(target: Path, inputs: Path, names: dict[Path, str]) -> None:
    """Refuse to write over an input: into an input folder (annotated images would replace the
    originals), or, for one input file, onto that file."""
    single = target.suffix.lower() in IMAGE_SUFFIXES
    if inputs.is_dir():
        source, folder = inputs.resolve(), (target.parent if single else target).resolve()
        if folder == source or source in folder.parents:
            raise ConfigError(f"-o {target} writes inside the input {inputs}", where="-o",
                              hint="choose an output folder outside the input folder")
    elif any(path.resolve() == inputs.resolve() for path in ([target] if single else
                                                             [target / name for name in names.values()])):
        raise ConfigError(f"-o {target} writes over the input {inputs}", where="-o",
                          hint="choose another output file name or folder")


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
