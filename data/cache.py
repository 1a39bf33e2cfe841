"""RAM cache: decoded images kept in memory, downscaled so the longer side is at most `cache_imgsz`.

Filled once in the main process before the DataLoader starts its workers, which then share the
arrays (fork, copy-on-write). The memory it will take is printed before filling."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image


def cached_size(width: int, height: int, cache_imgsz: int) -> tuple[int, int]:
    ratio = min(1.0, cache_imgsz / max(width, height))
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def load_rgb(path: Path) -> PIL.Image.Image:
    with PIL.Image.open(path) as im:
        return im.convert("RGB")


class RamCache:
    def __init__(self, paths: list[Path], sizes: list[tuple[int, int]], cache_imgsz: int = 640):
        self.paths, self.cache_imgsz = paths, cache_imgsz
        self.sizes = [cached_size(w, h, cache_imgsz) for w, h in sizes]
        self.arrays: list[np.ndarray | None] = [None] * len(paths)

    def estimate_bytes(self) -> int:
        return sum(w * h * 3 for w, h in self.sizes)

    def _load(self, i: int) -> np.ndarray:
        image = load_rgb(self.paths[i])
        size = cached_size(*image.size, self.cache_imgsz)
        if size != image.size:
            image = image.resize(size, PIL.Image.BILINEAR)
        return np.asarray(image)

    def fill(self, workers: int = 8, log=print) -> None:
        log(f"RAM cache: {len(self.paths)} images at <= {self.cache_imgsz} px, "
            f"about {self.estimate_bytes() / 2**30:.2f} GiB")
        start = time.time()
        with ThreadPoolExecutor(max(1, workers)) as pool:  # decoding releases the GIL
            self.arrays = list(pool.map(self._load, range(len(self.paths))))
        log(f"RAM cache: filled in {time.time() - start:.1f}s")

    def get(self, i: int) -> PIL.Image.Image:
        return PIL.Image.fromarray(self.arrays[i])
