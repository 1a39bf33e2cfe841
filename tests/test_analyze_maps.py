"""Heatmaps and feature maps of a graph's rows."""
import pytest
import torch

from analyze.featuremap import feature_maps, save_feature_figures
from analyze.heatmap import METHODS, DetectionTarget, choose_detections, heatmap
from models import build_model
from core.errors import ConfigError
from tests.engine_helpers import TINY_GRAPH


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_model(TINY_GRAPH).eval()


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_is_an_image_sized_map_in_unit_range(detector, method):
    image = torch.rand(3, 64, 64)
    cam, detections = heatmap(detector, image, layer=2, method=method, target="all", conf=0.0, max_dets=3)
    assert cam.shape == (64, 64)
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6 and cam.max() > 0
    assert len(detections["labels"]) == 3


def test_detection_target_sums_chosen_class_scores_and_box_agreement():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [-3.0, -3.0]])
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1], [0.7, 0.7, 0.1, 0.1]])
    packed = torch.cat([logits, boxes], -1)
    queries, labels, chosen, _ = choose_detections(packed, conf=0.5, max_dets=5)
    assert queries.tolist() == [0, 1] and labels.tolist() == [1, 0]  # sigmoid(2)=0.88, sigmoid(1)=0.73
    by_class = DetectionTarget(queries, labels, chosen, "class")(packed)
    assert by_class.item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item() + torch.sigmoid(torch.tensor(1.0)).item())
    # the predicted boxes are the detected ones, so each IoU is 1
    assert DetectionTarget(queries, labels, chosen, "box")(packed).item() == pytest.approx(2.0)
    assert DetectionTarget(queries, labels, chosen, "all")(packed).item() == pytest.approx(by_class.item() + 2.0)


def test_no_confident_detection_falls_back_to_the_best_one():
    packed = torch.cat([torch.tensor([[-5.0], [-2.0]]), torch.rand(2, 4)], -1)
    queries, _, _, _ = choose_detections(packed, conf=0.9, max_dets=5)
    assert queries.tolist() == [1]


def test_feature_maps_and_figures(detector, tmp_path):
    maps = feature_maps(detector, torch.rand(3, 64, 64), [0, 3])
    assert maps[0][0].shape == (8, 32, 32) and maps[3][0].shape == (32, 4, 4)
    saved = save_feature_figures(maps[0][0], "row 0", tmp_path, "img_row0", channels=8)
    assert all(p.stat().st_size > 2000 for p in saved)


def test_bad_layer_names_the_valid_range(detector):
    with pytest.raises(ConfigError, match=r"rows 0\.\.4"):
        feature_maps(detector, torch.rand(3, 64, 64), [9])
    with pytest.raises(ConfigError, match="does not output feature maps"):
        feature_maps(detector, torch.rand(3, 64, 64), [4])  # the decoder row


def test_heatmap_and_featuremap_clis_write_pictures_for_a_trained_checkpoint(trained_run, tmp_path):
    from PIL import Image

    from analyze import featuremap, heatmap as heatmap_cli

    image = sorted((trained_run["data"] / "val").glob("*.jpg"))[0]
    common = ["-c", str(trained_run["config"]), "-r", str(trained_run["checkpoint"]), "-i", str(image)]
    heatmap_cli.main([*common, "--layers", "2", "3", "--method", "eigencam", "--target", "class", "-o", str(tmp_path / "cam")])
    featuremap.main([*common, "--layers", "1", "-o", str(tmp_path / "features")])
    cams = sorted((tmp_path / "cam").glob("*.png"))
    assert [p.name for p in cams] == [f"{image.stem}_row2_eigencam_class.png", f"{image.stem}_row3_eigencam_class.png"]
    assert Image.open(cams[0]).size == (64, 64)  # the network input the model saw
    assert {p.name for p in (tmp_path / "features").glob("*.png")} == {f"{image.stem}_row1_grid.png", f"{image.stem}_row1_mean.png"}


def test_map_clis_keep_same_stem_inputs_apart_skip_broken_images_and_guard_the_input(trained_run, tmp_path, capsys):
    import shutil

    from PIL import Image

    from analyze import featuremap

    folder = tmp_path / "images"
    folder.mkdir()
    image = sorted((trained_run["data"] / "val").glob("*.jpg"))[0]
    shutil.copy(image, folder / "x.jpg")
    Image.open(image).save(folder / "x.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    common = ["-c", str(trained_run["config"]), "-r", str(trained_run["checkpoint"]), "--layers", "1"]
    featuremap.main([*common, "-i", str(folder), "-o", str(tmp_path / "out")])
    assert {p.name for p in (tmp_path / "out").glob("*_grid.png")} == {"x_jpg_row1_grid.png", "x_png_row1_grid.png"}
    assert "skipped" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="writes inside the input"):
        featuremap.main([*common, "-i", str(folder), "-o", str(folder / "maps")])
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        featuremap.main([*common, "-i", str(folder), "-o", str(tmp_path / "file")])
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_bytes(b"")
    with pytest.raises(ConfigError, match="no images in .*only videos"):
        featuremap.main([*common, "-i", str(videos), "-o", str(tmp_path / "out2")])
    with pytest.raises(SystemExit):
        featuremap.main([*common, "-i", str(folder), "--channels", "0"])
