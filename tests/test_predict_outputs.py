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


def test_predicting_with_another_graph_in_the_config_says_which_graph_is_used(trained_run, tmp_path):
    """The checkpoint's graph is built (its weights fit no other); a config naming another one is told so."""
    import yaml
    from PIL import Image

    from tests.test_corpus import run_cli

    cfg = yaml.safe_load(Path(trained_run["config"]).read_text())
    cfg["graph"]["backbone"][0][3][0] *= 2  # another width: these weights would not fit it
    other = tmp_path / "other.yml"
    other.write_text(yaml.safe_dump(cfg))
    Image.new("RGB", (64, 48), (90, 120, 30)).save(tmp_path / "x.jpg")
    argv = ["-c", other, "-r", trained_run["checkpoint"], "-i", tmp_path / "x.jpg", "-o", tmp_path / "out"]
    code, text = run_cli(predict.main, argv)
    assert code == 0 and "the config's graph differs and is not used" in text
    code, text = run_cli(predict.main, [*argv[:1], trained_run["config"], *argv[2:]])
    assert code == 0 and "is not used" not in text
