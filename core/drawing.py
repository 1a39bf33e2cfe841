"""Drawing boxes on images: one palette and one way to label a box, for every picture we write
(predictions, training batches, heatmap overlays)."""
from __future__ import annotations

PALETTE = [(255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 178, 29), (207, 210, 49), (146, 204, 23),
           (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (52, 69, 147), (100, 115, 255),
           (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199)]


def color(label: int) -> tuple[int, int, int]:
    return PALETTE[int(label) % len(PALETTE)]


def draw_detections(pil_image, detections: list[dict], line_width: int | None = None,
                    font_size: int | None = None):
    """A copy of the image with each detection ({label, class, score, box xyxy px}) boxed and labelled.

    line_width and font_size default to the image's size (about 1/400 and 1/50 of its longer side)."""
    from PIL import ImageDraw, ImageFont

    image = pil_image.convert("RGB")
    pen = ImageDraw.Draw(image)
    width = line_width or max(1, round(max(image.size) / 400))
    font = ImageFont.load_default(font_size or max(10, round(max(image.size) / 50)))
    for det in detections:
        fill = color(det["label"])
        x0, y0, x1, y1 = det["box"]
        pen.rectangle([x0, y0, x1, y1], outline=fill, width=width)
        text = f"{det['class']} {det['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text, font=font)
        pen.rectangle([x0, y0 - (bottom - top) - 2, x0 + (right - left) + 2, y0], fill=fill)
        pen.text((x0 + 1, y0 - (bottom - top) - 2), text, fill=(255, 255, 255), font=font)
    return image
