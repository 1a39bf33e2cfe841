"""RAM cache: decoded images kept in memory, downscaled so the longer side is at most `cache_imgsz`.

Filled once in the main process before the DataLoader starts its workers, which then share the
arrays (fork, copy-on-write). The memory it will take is printed before filling."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from core.errors import DataError
from data.validate import ORIENTATION_TAG


def cached_size(width: int, height: int, cache_imgsz: int) -> tuple[int, int]:
    ratio = min(1.0, cache_imgsz / max(width, height))
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def load_rgb(path: Path) -> PIL.Image.Image:
    """The image as 8-bit RGB, upright as viewers show it (EXIF orientation applied, as annotation
    tools do); 16-bit images keep their high byte (PIL's own conversion would clip them to white)."""
    try:
        with PIL.Image.open(path) as im:
            if im.getexif().get(ORIENTATION_TAG, 1) != 1:
                im = PIL.ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):  # I;16 / I;16B / I: 16-bit greyscale
                im = PIL.Image.fromarray((np.asarray(im).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            return im.convert("RGB")
    except PIL.Image.DecompressionBombError as err:
        raise DataError(f"image above PIL's pixel limit: {str(err).split(',')[0]}", where=str(path),
                        hint="downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"image cannot be decoded: {err}", where=str(path),
                        hint="re-export or remove this image (the header was readable, the pixels are not)") from None


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
