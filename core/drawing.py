"""Drawing boxes on images: one palette, one font and one way to label a box, for every picture we
write (predictions, training batches, heatmap overlays), and the same font for matplotlib plots.

Class names come in any language, so text is set in a font with Chinese, Japanese and Korean
glyphs: Noto Sans CJK from the `noto-cjk-sans-otc` package (a requirement), else the first CJK font
installed on the system (`CJK_FAMILIES`); only without either do labels fall back to Pillow's
built-in font, which draws CJK characters as empty boxes."""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

PALETTE = [(255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 178, 29), (207, 210, 49), (146, 204, 23),
           (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (52, 69, 147), (100, 115, 255),
           (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199)]

# System fonts with CJK glyphs, in order of preference (Linux, Windows, macOS)
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
                "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
                "Microsoft YaHei", "SimHei", "Yu Gothic", "Meiryo", "Malgun Gothic", "PingFang SC",
                "Hiragino Sans GB", "Arial Unicode MS")
BUNDLED_FACE = 2   # NotoSansCJK-Regular.ttc holds JP, KR, SC, TC, HK (then the Mono faces): SC is face 2


def color(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


@dataclass(frozen=True)
class Font:
    path: str
    index: int       # the face inside a .ttc collection
    family: str      # the name matplotlib knows it by


@functools.cache
def cjk_font() -> Font | None:
    """The font every picture's text is set in: the packaged Noto Sans CJK, else a system CJK font."""
    try:
        import noto_cjk_sans_otc
    except ImportError:
        noto_cjk_sans_otc = None
    if noto_cjk_sans_otc is not None and noto_cjk_sans_otc.FONT_PATH.is_file():
        return Font(str(noto_cjk_sans_otc.FONT_PATH), BUNDLED_FACE, "Noto Sans CJK SC")
    from matplotlib import font_manager  # its cached scan of the system's fonts

    installed = {entry.name: entry for entry in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in installed:
            entry = installed[family]
            return Font(entry.fname, getattr(entry, "index", 0), family)
    return None


@functools.cache
def pil_font(size: int):
    """A Pillow font of `size` pixels in `cjk_font()` (Pillow's built-in font when there is none)."""
    from PIL import ImageFont

    font = cjk_font()
    if font is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(font.path, size, index=font.index)


@contextlib.contextmanager
def plot_fonts():
    """matplotlib's text inside this block falls back to `cjk_font()` for glyphs its default font
    (DejaVu Sans) lacks, so class names in any script draw as text, not as empty boxes."""
    import matplotlib

    font = cjk_font()
    if font is None:
        yield
        return
    from matplotlib import font_manager

    if font.family not in {entry.name for entry in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(font.path)   # a packaged font matplotlib's scan did not see
    with matplotlib.rc_context({"font.family": [*matplotlib.rcParams["font.family"], font.family]}):
        yield


def default_line_width(image_size) -> int:
    return max(1, round(max(image_size) / 400))


def default_font_size(image_size) -> int:
    return max(10, round(max(image_size) / 50))


def draw_detections(pil_image, detections: list[dict], line_width: int | None = None, font_size: int | None = None):
    """A copy of the image with each detection ({label, class, box xyxy px, optional score}) boxed and
    labelled; `line_width` and `font_size` in pixels (default: about 1/400 and 1/50 of the longer side)."""
    from PIL import ImageDraw

    image = pil_image.convert("RGB")
    pen = ImageDraw.Draw(image)
    width = line_width or default_line_width(image.size)
    font = pil_font(font_size or default_font_size(image.size))
    for det in detections:
        fill = color(det["label"])
        x0, y0, x1, y1 = det["box"]
        pen.rectangle([x0, y0, x1, y1], outline=fill, width=width)
        text = f"{det['class']} {det['score']:.2f}" if "score" in det else str(det["class"])
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        height = bottom - top + 2
        y = y0 - height if y0 - height >= 0 else y0   # above the box, or inside it at the image's top edge
        pen.rectangle([x0, y, x0 + right - left + 2, y + height], fill=fill)
        pen.text((x0 + 1 - left, y + 1 - top), text, fill=(255, 255, 255), font=font)
    return image
