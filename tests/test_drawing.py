"""Pictures read in any language: a CJK class name draws as distinct glyphs in box labels (a glyph-less
font draws it as a row of identical empty boxes), plots draw CJK names with no missing glyph, and
tables pad names by display width."""
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core import drawing
from core.text import display_width, fit

GLYPH_LESS = str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")  # no CJK: .notdef boxes
NAME = "行人車"   # three different characters (pedestrian, vehicle)
BOX = [20, 80, 300, 200]


def label_cells(font, monkeypatch) -> list[np.ndarray]:
    """The label draw_detections writes for NAME with `font`, cut into one crop per character."""
    monkeypatch.setattr(drawing, "pil_font", lambda size: font)
    image = drawing.draw_detections(Image.new("RGB", (320, 220)), [{"label": 0, "class": NAME, "box": BOX}], font_size=32)
    left, top, _, bottom = ImageDraw.Draw(image).textbbox((0, 0), NAME, font=font)
    pixels = np.asarray(image.convert("L"), dtype=float)[BOX[1] - (bottom - top + 2): BOX[1]]  # the label band
    x, width, cells = BOX[0] + 1 - left, int(min(font.getlength(c) for c in NAME)), []
    for char in NAME:
        cells.append(pixels[:, round(x): round(x) + width])
        x += font.getlength(char)
    return cells


def differences(cells) -> list[float]:
    return [float(np.abs(cells[i] - cells[j]).mean()) for i in range(len(cells)) for j in range(i + 1, len(cells))]


def test_cjk_label_draws_distinct_glyphs_where_a_glyph_less_font_draws_identical_boxes(monkeypatch):
    assert drawing.cjk_font() is not None, "no CJK font: install noto-cjk-sans-otc (requirements.txt)"
    ours = drawing.pil_font(32)                                                     # the font pictures use
    tofu = label_cells(ImageFont.truetype(GLYPH_LESS, 32), monkeypatch)
    assert all(cell.std() > 10 for cell in tofu) and max(differences(tofu)) < 1   # inked, and all the same box
    glyphs = label_cells(ours, monkeypatch)
    assert all(cell.std() > 10 for cell in glyphs) and min(differences(glyphs)) > 10


def test_labels_take_the_requested_line_width_and_font_size():
    image = Image.new("RGB", (200, 200))
    thin = np.asarray(drawing.draw_detections(image, [{"label": 0, "class": "a", "box": [50, 50, 150, 150]}],
                                              line_width=1, font_size=10))
    thick = np.asarray(drawing.draw_detections(image, [{"label": 0, "class": "a", "box": [50, 50, 150, 150]}],
                                               line_width=5, font_size=30))
    assert thin[100, 50:56].any(axis=1).sum() == 1 and thick[100, 50:56].any(axis=1).sum() == 5  # left edge
    label_height = lambda pixels: int(pixels[:50, 52].any(axis=1).sum())          # the filled band above the box
    assert label_height(thick) > 2 * label_height(thin)


def missing_glyph_warnings(plot) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_plots_draw_cjk_names_with_no_missing_glyph(tmp_path):
    from analyze.dataset import plot_stats
    from metrics.detection import plot_confusion_matrix
    from metrics.tide import TideResult, plot

    matrix = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 0]])
    # the check can fail: without the font, matplotlib's DejaVu Sans has no glyph for these names
    assert missing_glyph_warnings(lambda: plot_confusion_matrix.__wrapped__(matrix, ["行人", "자전거"], tmp_path / "a.png"))
    assert missing_glyph_warnings(lambda: plot_confusion_matrix(matrix, ["行人", "자전거"], tmp_path / "cm.png")) == []
    stats = {"classes": [{"name": "行人", "instances": 3, "images": 2}, {"name": "自転車", "instances": 1, "images": 1}],
             "boxes_per_image": [1, 3], "small": 1, "medium": 2, "large": 1, "rel_w": [0.1, 0.5], "rel_h": [0.2, 0.3],
             "aspect": [0.5, 1.0, 2.0], "centers": [[0.5, 0.5], [0.2, 0.3]]}
    assert missing_glyph_warnings(lambda: plot_stats(stats, tmp_path / "stats.png", title="数据集")) == []
    tide = TideResult(ap50=50.0, main={k: 1.0 for k in ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")},
                      special={"FalsePos": 2.0, "FalseNeg": 3.0}, counts={})
    assert missing_glyph_warnings(lambda: plot(tide, tmp_path / "tide.png", title="验证集")) == []


@pytest.mark.parametrize("text, width, expected", [("行人", 6, "行人  "), ("car", 5, "car  "), ("自転車", 5, "自転 "),
                                                   ("e\u0301t\u00e9", 4, "e\u0301t\u00e9 ")])
def test_fit_pads_and_cuts_by_display_width(text, width, expected):
    assert fit(text, width) == expected and display_width(fit(text, width)) == width


def test_per_class_table_columns_line_up_with_cjk_names():
    from metrics.detection import format_per_class

    row = lambda name: {"class": name, "instances": 3, **{k: 0.5 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    lines = format_per_class([row("car"), row("行人"), row("自転車に乗る人たちの長い名前"), row("a" * 30)]).splitlines()
    assert {display_width(line) for line in lines} == {len(lines[0])}
    assert {display_width(line[: line.index(" 3 ")]) for line in lines[1:]} == {19 + 1 + 4}   # name, gap, the `inst` column up to its digit


def test_predict_table_lines_up_scores_under_cjk_and_long_names():
    import predict

    names = ["猫", "cat", "traffic light of a very long name"]
    table = predict.format_table("x.jpg", [{"class": n, "score": 0.5, "box": [1, 2, 3, 4]} for n in names])
    rows = table.splitlines()[1:]
    assert [display_width(r[:r.index("0.500")]) for r in rows[:2]] == [23, 23]   # "  [i] " + 16 + " "
    assert names[2] in rows[2]                                                     # never cut
