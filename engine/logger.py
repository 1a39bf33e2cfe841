"""Run logging: a progress bar per epoch, TensorBoard scalars, `log.txt` and train-batch pictures.

Only rank 0 logs; on other ranks every method is a no-op."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from core import dist
from core.drawing import draw_detections


class RunLogger:
    def __init__(self, output_dir: Path | None, summary_dir: Path | None = None, progress_bar: bool = True):
        self.active = dist.is_main() and output_dir is not None
        self.output_dir = output_dir
        self.progress_bar = progress_bar
        self.writer = None
        if self.active and summary_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(summary_dir))

    def bar(self, iterable, total: int, description: str):
        if not (self.active and self.progress_bar):
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=description, dynamic_ncols=True, leave=True)

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def epoch_line(self, record: dict) -> None:
        if self.active:
            with open(self.output_dir / "log.txt", "a") as f:
                f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_batch(images: torch.Tensor, targets: list[dict], path: Path, names: list[str] | None = None,
               max_images: int = 16) -> None:
    """A grid of the augmented training images with their boxes (cxcywh normalised) drawn."""
    from PIL import Image

    images = images[:max_images].detach().float().cpu().clamp(0, 1)
    count, _, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = Image.new("RGB", (columns * width, rows * height), (114, 114, 114))
    for i in range(count):
        tile = Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).astype("uint8"))
        boxes = targets[i]["boxes"].detach().float().cpu()
        detections = [{"label": label, "class": names[label] if names and label < len(names) else str(label),
                       "box": [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]}
                      for (cx, cy, w, h), label in zip(boxes.tolist(), targets[i]["labels"].cpu().tolist())]
        # thin lines and small labels: a tile is one training image, often 64-640 px
        canvas.paste(draw_detections(tile, detections, line_width=1, font_size=max(8, round(max(height, width) / 50))),
                     ((i % columns) * width, (i // columns) * height))
    canvas.save(path)
