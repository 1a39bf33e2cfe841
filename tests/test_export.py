"""export.py and the onnxruntime backend: the exported graph gives PyTorch's detections, at any batch."""
from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import export  # noqa: E402 (after the skips: it needs onnx at export time)
from engine import onnx_export  # noqa: E402
import predict  # noqa: E402
from core.checkpoint_io import save_atomic
from engine import checkpoint  # noqa: E402
from engine.onnx_runtime import OnnxDetector  # noqa: E402
from models import build_model  # noqa: E402
from models.postprocess import PostProcessor  # noqa: E402
from tests.engine_helpers import REPO, TINY_GRAPH, write_config  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))

NAMES = ["circle", "square", "triangle"]


def tiny_model():
    """TINY_GRAPH with its weights nudged (bench/export_check.py), so scores and boxes spread out."""
    from export_check import nudge_weights

    torch.manual_seed(0)
    return nudge_weights(build_model(TINY_GRAPH, check=False))


def tiny_detector() -> onnx_export.DeployModel:
    return onnx_export.DeployModel(tiny_model(), PostProcessor(3, num_top_queries=30)).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    detector = tiny_detector()
    path = onnx_export.export_onnx(detector, tmp_path_factory.mktemp("onnx") / "tiny.onnx", [64, 64], dynamic_batch=True)
    return detector, path


def test_onnx_equals_pytorch_at_batch_1_and_4_from_one_file(tiny_onnx):
    detector, path = tiny_onnx
    session = OnnxDetector(path)
    assert session.dynamic_batch
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sizes = torch.tensor([[64, 64], [640, 480], [100, 200], [64, 64]])   # (w, h): boxes scale per image
    with torch.no_grad():
        labels, boxes, scores = detector(images, sizes)
    assert scores[:, 0].min() > 0.2 and boxes.std() > 1.0               # a spread the comparison can see
    for batch in (1, 4):
        outs = [session(images[i:i + batch], sizes[i:i + batch]) for i in range(0, 4, batch)]
        got_labels, got_boxes, got_scores = (torch.cat(parts) for parts in zip(*outs))
        assert got_labels.dtype == torch.int64 and got_boxes.shape == (4, 30, 4)
        assert torch.equal(got_labels, labels)
        torch.testing.assert_close(got_scores, scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_boxes, boxes, atol=1e-3, rtol=0)   # pixels of images up to 640 wide


def test_simplified_fixed_batch_file_equals_pytorch_and_rejects_another_batch(tmp_path):
    pytest.importorskip("onnxslim")
    detector = tiny_detector()
    path = onnx_export.export_onnx(detector, tmp_path / "fixed.onnx", [64, 64], simplify=True)
    session = OnnxDetector(path)
    assert not session.dynamic_batch
    images, sizes = torch.rand(1, 3, 64, 64), torch.tensor([[320, 240]])
    with torch.no_grad():
        expected = detector(images, sizes)
    got = session(images, sizes)
    assert torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], atol=1e-3, rtol=0)
    torch.testing.assert_close(got[2], expected[2], atol=1e-5, rtol=0)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session(torch.rand(2, 3, 64, 64), torch.tensor([[64, 64]] * 2))


def test_compare_top_pairs_rank_swaps_and_reports_a_moved_box():
    reference = (torch.tensor([0, 1, 2]), torch.tensor([[0., 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]]),
                 torch.tensor([0.9, 0.5, 0.5]))
    swapped = tuple(t[[0, 2, 1]] for t in reference)                    # a near-tie changed rank: not a miss
    assert onnx_export.compare_top(reference, swapped, top=3) == (0.0, 0.0)
    moved = (reference[0], reference[1] + torch.tensor([[0., 0, 0, 0.004], [0, 0, 0, 0], [0, 0, 0, 0]]),
             reference[2] - torch.tensor([0.0, 0.002, 0.0]))
    score_diff, box_diff = onnx_export.compare_top(reference, moved, top=3)
    assert score_diff == pytest.approx(0.002, abs=1e-6) and box_diff == pytest.approx(0.004, abs=1e-6)  # float32
    relabelled = (torch.tensor([0, 1, 1]), *reference[1:])
    assert onnx_export.compare_top(reference, relabelled, top=3) == (float("inf"), float("inf"))


def tiny_checkpoint(tmp_path):
    """A checkpoint in train.py's layout, holding the (un-fused) weights of `tiny_detector`."""
    state = tiny_model().state_dict()
    meta = {"graph_spec": TINY_GRAPH, "nc": 3, "imgsz": [64, 64], "names": NAMES}
    save_atomic({"model": state, "meta": meta}, tmp_path / "tiny.pth")
    return tmp_path / "tiny.pth"


def test_export_cli_check_then_predict_onnx_backend_equals_torch(tmp_path):
    from PIL import Image

    ckpt = tiny_checkpoint(tmp_path)
    # letterbox + ImageNet normalisation in the val pipeline: the file must carry both to predict.py
    cfg = {"graph": TINY_GRAPH, "postprocessor": {"num_top_queries": 30}, "val_dataloader": {"dataset": {
        "transforms": {"ops": [{"type": "Resize", "size": [64, 64], "letterbox": True},
                               {"type": "ConvertPILImage", "dtype": "float32", "scale": True},
                               {"type": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}]}}}}
    cfg_path = write_config(cfg, tmp_path / "tiny.yml")
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    generator = torch.Generator().manual_seed(2)
    Image.fromarray((torch.rand(90, 150, 3, generator=generator) * 255).byte().numpy()).save(image_dir / "wide.png")
    onnx_path = tmp_path / "tiny.onnx"

    export.main(["-c", str(cfg_path), "-r", str(ckpt), "-o", str(onnx_path), "--dynamic-batch", "--check",
                 "--images", str(image_dir / "wide.png")])
    session = OnnxDetector(onnx_path)
    assert session.names == NAMES and session.nc == 3
    assert session.preprocessing == {"imgsz": [64, 64], "letterbox": True,
                                     "normalize": [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]}

    common = ["-i", str(image_dir), "--conf", "0.0"]
    by_torch = predict.main(["-c", str(cfg_path), "-r", str(ckpt), "-o", str(tmp_path / "torch"), "-d", "cpu", *common])
    by_onnx = predict.main(["--backend", "onnx", "-m", str(onnx_path), "-o", str(tmp_path / "onnx"), *common])
    torch_dets, onnx_dets = by_torch["wide.png"], by_onnx["wide.png"]
    assert len(onnx_dets) == len(torch_dets) == 30
    assert [d["class"] for d in onnx_dets] == [d["class"] for d in torch_dets]
    for ours, theirs in zip(onnx_dets, torch_dets):
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)            # printed to 4 digits
        assert ours["box"] == pytest.approx(theirs["box"], abs=0.11)                # printed to 0.1 px
    # boxes come back in the 150x90 original, through the letterbox padding
    assert max(d["box"][2] for d in onnx_dets) <= 150 and max(d["box"][3] for d in onnx_dets) <= 90
    assert json.loads((tmp_path / "onnx" / "detections.json").read_text()) == by_onnx


def test_trt_is_skipped_with_the_reason_without_gpu_or_tensorrt(tiny_onnx, capsys):
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    if torch.cuda.is_available() and has_trt:
        pytest.skip("a GPU and TensorRT are present: the skip path does not apply")
    _, path = tiny_onnx
    assert onnx_export.export_tensorrt(path, [64, 64], dynamic_batch=True) is None
    printed = capsys.readouterr().out
    assert printed.startswith("--trt skipped:") and f"trtexec --onnx={path}" in printed
    assert not path.with_suffix(".engine").exists()


def test_latency_bench_times_three_backends_and_uses_analyze_info_flops():
    import latency
    from analyze.info import model_info

    row = latency.measure("graphs/examples/tiny_deim.yaml", 64, threads=1, repeats=2, warmup=1, with_onnx=True,
                          rows=True)
    assert row["gflops"] == pytest.approx(model_info("graphs/examples/tiny_deim.yaml", imgsz=[64, 64])["gflops_deploy"], abs=1e-4)
    assert all(row[f"{name}_ms"] > 0 and row[f"{name}_p90_ms"] >= row[f"{name}_ms"] for name in ("eval", "deploy", "onnxrt"))
    cells = latency.format_row(row, peak=10.0, names=("eval", "deploy", "onnxrt")).strip("| ").split(" | ")
    assert len(cells) == len(latency.header(("eval", "deploy", "onnxrt")).splitlines()[0].strip("| ").split(" | ")) == 9
    assert row["rows"].count("\n") == 2 + 4   # header, rule, one line per row (rows 0-4)


def test_int8_file_quantizes_the_convolutions_keeps_metadata_and_scores_like_fp32(tmp_path):
    import onnx

    from data.demo import make_demo

    make_demo(tmp_path / "data", train=4, val=3, imgsz=64)
    preprocessing = {"imgsz": [64, 64], "letterbox": False, "normalize": False}
    fp32 = onnx_export.export_onnx(tiny_detector(), tmp_path / "tiny.onnx", [64, 64],
                                   metadata={"names": json.dumps(NAMES), "imgsz": "[64, 64]"})
    int8 = onnx_export.quantize_int8(fp32, tmp_path / "tiny.int8.onnx", tmp_path / "data/train", preprocessing)
    graph = onnx.load(str(int8))
    # each conv with 16 channels or more in and out reads dequantized int8 weights; the narrower ones
    # (3 -> 8 on the image, 8 -> 16) keep their float weights; the metadata (preprocessing, names) is carried over

    def int8_conv_weights(model) -> list[bool]:  # per conv: does it read dequantized int8 weights?
        producers = {out: node for node in model.graph.node for out in node.output}
        return [node.input[1] in producers and producers[node.input[1]].op_type == "DequantizeLinear"
                for node in model.graph.node if node.op_type == "Conv"]

    weights = {tensor.name: list(tensor.dims) for tensor in graph.graph.initializer}
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    assert int8_conv_weights(graph) == [False, False, True, True]
    assert [weights[node.input[1]][:2] for node in convs[:2]] == [[8, 3], [16, 8]]
    assert {p.key: p.value for p in graph.metadata_props}["names"] == json.dumps(NAMES)
    every = onnx.load(str(onnx_export.quantize_int8(fp32, tmp_path / "every.int8.onnx", tmp_path / "data/train",
                                                    preprocessing, min_channels=0)))
    assert int8_conv_weights(every) == [True, True, True, True]
    ann, images = tmp_path / "data/val/_annotations.coco.json", tmp_path / "data/val"
    stats = {path: onnx_export.evaluate_onnx(path, ann, images) for path in (fp32, int8)}
    assert all(len(s) == 12 and all(-1 <= v <= 1 for v in s) for s in stats.values())
    # the same detector: the int8 file's detections stay near the fp32 file's on a calibration-like image
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    size = torch.tensor([[64, 64]])
    (_, _, fp32_scores), (_, _, int8_scores) = OnnxDetector(fp32)(image, size), OnnxDetector(int8)(image, size)
    assert (fp32_scores[0, :5] - int8_scores[0, :5]).abs().max() < 0.1


def test_int8_op_types_are_checked_before_anything_is_written_and_widen_what_is_quantized(tmp_path):
    import onnx

    from core.errors import ArgumentError, ConfigError
    from data.demo import make_demo

    with pytest.raises(ArgumentError, match="not ONNX op types: conv2d"):
        onnx_export.check_int8_ops(["Conv", "conv2d"])
    assert onnx_export.check_int8_ops("Conv") == ["Conv"]  # one name, not its letters
    with pytest.raises(ArgumentError, match="--int8-ops|not ONNX op types"):
        export.main(["-c", "graphs/examples/tiny_deim.yaml", "--random-weights", "-o", str(tmp_path / "x.onnx"),
                     "--int8", "--calib", str(tmp_path), "--int8-ops", "Conv2d"])
    with pytest.raises(ConfigError, match="--int8-min-channels must be 0 or more, got -1"):
        export.main(["-c", "graphs/examples/tiny_deim.yaml", "--random-weights", "-o", str(tmp_path / "x.onnx"),
                     "--int8", "--calib", str(tmp_path), "--int8-min-channels", "-1"])
    assert not (tmp_path / "x.onnx").exists()
    make_demo(tmp_path / "data", train=4, val=1, imgsz=64)
    preprocessing = {"imgsz": [64, 64], "letterbox": False, "normalize": False}
    fp32 = onnx_export.export_onnx(tiny_detector(), tmp_path / "tiny.onnx", [64, 64])

    def int8_adds(path) -> int:  # Adds between int8 tensors: both inputs come dequantized from int8
        graph = onnx.load(str(path)).graph
        producers = {out: node for node in graph.node for out in node.output}
        return sum(all(name in producers and producers[name].op_type == "DequantizeLinear" for name in node.input)
                   for node in graph.node if node.op_type == "Add")

    wide = onnx_export.quantize_int8(fp32, tmp_path / "wide.int8.onnx", tmp_path / "data/train", preprocessing)
    convs_only = onnx_export.quantize_int8(fp32, tmp_path / "convs.int8.onnx", tmp_path / "data/train", preprocessing,
                                           op_types=["Conv"])
    assert int8_adds(wide) > 0 and int8_adds(convs_only) == 0


def test_export_refuses_an_output_that_is_not_an_onnx_file_before_writing(tmp_path):
    """-o last.pth (the checkpoint just read) or a folder would be written over: refused up front."""
    from core.errors import ArgumentError, ConfigError

    checkpoint = tmp_path / "last.pth"
    checkpoint.write_bytes(b"weights")
    base = ["-c", "graphs/examples/tiny_deim.yaml", "--random-weights"]
    with pytest.raises(ConfigError, match="is not an .onnx file name"):
        export.main(base + ["-o", str(checkpoint)])
    assert checkpoint.read_bytes() == b"weights"
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        export.main(base + ["-o", str(tmp_path / "folder.onnx")])
    with pytest.raises(ConfigError, match="over the input"):
        export.main(["-c", str(tmp_path / "model.onnx"), "--random-weights", "-o", str(tmp_path / "model.onnx")])
    with pytest.raises(ArgumentError, match="--calib-images must be 1 or more, got 0"):
        export.main(base + ["-o", str(tmp_path / "x.onnx"), "--int8", "--calib", str(tmp_path), "--calib-images", "0"])
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("extra, message", [
    (["--imgsz", "0", "0"], "positive sides up to 8192"),
    (["--imgsz", "100", "100"], "must be divisible by 32"),
    (["--opset", "15"], r"--opset 15 is outside 16\.\.20"),   # no grid_sample before 16
    (["--opset", "99"], r"--opset 99 is outside 16\.\.20"),
])
def test_bad_export_sizes_and_opsets_stop_before_anything_is_built(tmp_path, extra, message):
    from core.errors import DetrZooError

    with pytest.raises(DetrZooError, match=message):
        export.main(["-c", "graphs/examples/tiny_deim.yaml", "--random-weights", "-o", str(tmp_path / "x.onnx"), *extra])
    assert not (tmp_path / "x.onnx").exists()


def test_a_graph_without_a_decoder_is_refused_not_traced(tmp_path):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="ends in Conv, not a DETR decoder"):
        export.main(["-c", "graphs/examples/tiny.yaml", "--random-weights", "-o", str(tmp_path / "x.onnx")])


def test_calibration_reads_images_as_training_does(tmp_path):
    """A 16-bit PNG calibrates as its 8-bit high byte (PIL's own RGB conversion clips it to white)."""
    from PIL import Image

    from data.cache import load_rgb
    from data.transforms import preprocess_image

    pixels = (torch.arange(32 * 32).reshape(32, 32) * 60).to(torch.int32).numpy()
    Image.fromarray(pixels.astype("uint16")).save(tmp_path / "deep.png")
    preprocessing = {"imgsz": [32, 32], "letterbox": False, "normalize": False}
    batch = onnx_export._CalibrationReader([tmp_path / "deep.png"], preprocessing).get_next()["images"][0]
    expected, _ = preprocess_image(load_rgb(tmp_path / "deep.png"), [32, 32])
    assert torch.equal(torch.from_numpy(batch), expected)
    assert 0.2 < batch.mean() < 0.8  # not white
