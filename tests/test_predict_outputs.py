"""predict.py's output names and its guard against writing over the inputs (no model needed)."""
from pathlib import Path

import pytest

import predict
from core.errors import ConfigError


def test_inputs_sharing_a_stem_get_distinct_annotated_names():
    images, videos = [Path("in/x.jpg"), Path("in/x.png"), Path("in/y.jpg")], [Path("in/x.mp4")]
    names = predict.annotated_names(images, videos)
    assert names == {Path("in/x.jpg"): "x_jpg.jpg", Path("in/x.png"): "x_png.jpg", Path("in/y.jpg"): "y.jpg",
                     Path("in/x.mp4"): "x.mp4"}  # the video's .mp4 meets no image's .jpg


def test_one_input_file_may_be_predicted_beside_itself_but_not_over_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = Path("single.jpg")
    image.write_bytes(b"x")
    names = predict.annotated_names([image], [])
    for output in ("predictions", "out", "result.jpg"):  # the default and the README's -o result.jpg
        predict.check_output(Path(output), image, names)
    for output in ("single.jpg", "."):  # the file itself, or the folder where its annotated copy is single.jpg
        with pytest.raises(ConfigError, match="writes over the input"):
            predict.check_output(Path(output), image, names)


def test_an_input_folder_refuses_outputs_inside_it(tmp_path):
    (tmp_path / "images").mkdir()
    for output in (tmp_path / "images", tmp_path / "images/out", tmp_path / "images/a.jpg"):
        with pytest.raises(ConfigError, match="writes inside the input"):
            predict.check_output(output, tmp_path / "images", {})
    predict.check_output(tmp_path / "out", tmp_path / "images", {})


def test_empty_class_names_are_refused():
    with pytest.raises(ConfigError, match="has an empty name"):
        predict.class_names("a,,b", [], 3)
    assert predict.class_names("a, b ,c", [], 3) == ["a", "b", "c"]


def test_the_onnx_backend_refuses_options_it_would_ignore(tmp_path):
    """The file fixes its weights at export: -r, or -u without a config, would change nothing."""
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.jpg")
    base = ["--backend", "onnx", "-m", str(tmp_path / "model.onnx"), "-i", str(tmp_path / "x.jpg"),
            "-o", str(tmp_path / "out")]
    with pytest.raises(ConfigError, match="-r last.pth has no effect with --backend onnx"):
        predict.main([*base, "-r", "last.pth"])
    with pytest.raises(ConfigError, match="-u changes a config"):
        predict.main([*base, "-u", "eval_score_threshold=0.5"])
