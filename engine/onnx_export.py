"""ONNX export of a detector: the deploy-form network and the post-processor in one graph, and
the check that onnxruntime gives PyTorch's detections. export.py is its command line; the
benchmarks and tests call it directly.

The export uses the TorchScript exporter (`dynamo=False`): the torch.export path needs the extra
`onnxscript` package, emits opset 18 and fails converting down to 17, and takes ~20x longer.

`quantize_int8` turns an exported file into an int8 one for CPU deployment: onnxruntime's static
quantization, calibrated on a folder of the user's images (preprocessed exactly as in evaluation),
of the convolutions only (the backbone and encoder, most of the FLOPs); the decoder's attention,
box regression and the post-processor stay float. `evaluate_onnx` scores a file on a COCO validation
set, so the int8 file's AP is printed beside the fp32 one's.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from core.errors import ArgumentError, ConfigError
from data.cache import load_rgb
from data.pipeline import eval_preprocessing
from data.transforms import as_size_hw, preprocess_image
from engine.onnx_runtime import INPUT_NAMES, OUTPUT_NAMES, OnnxDetector
from models.factory import build_detector, load_detector


class DeployModel(nn.Module):
    """Network and post-processor as one module: (images, orig_target_sizes) -> (labels, boxes, scores)."""

    def __init__(self, model: nn.Module, postprocessor: nn.Module):
        super().__init__()
        self.model = model.deploy()
        self.postprocessor = postprocessor.deploy()

    def forward(self, images: torch.Tensor, orig_target_sizes: torch.Tensor):
        return self.postprocessor(self.model(images), orig_target_sizes)


def load_config_or_graph(path: str, updates=()) -> dict:
    """A run config as is; a bare graph YAML (rows at the top level) becomes {'graph': path}."""
    from engine.config import load_config
    from core.yaml_io import load_yaml

    raw = load_yaml(path)
    if isinstance(raw, dict) and "graph" not in raw and ("backbone" in raw or "decoder" in raw):
        return {"graph": str(path)}
    return load_config(path, updates)


def build_for_export(cfg: dict, checkpoint: str | None, imgsz=None, with_meta: bool = False):
    """(DeployModel, preprocessing, class names[, checkpoint meta]): trained weights from `checkpoint`,
    or random ones."""
    meta = {}
    if checkpoint:
        model, postprocessor, meta = load_detector(checkpoint, cfg, torch.device("cpu"))
        names = list(meta.get("names") or [])
    else:
        torch.manual_seed(0)
        model, _, postprocessor = build_detector({**cfg, "imgsz": imgsz or cfg.get("imgsz")}, with_criterion=False)
        names = []
    if not (model.rows and model.rows[-1].takes_targets):
        last = model.rows[-1].module if model.rows else "nothing"
        raise ConfigError(f"the graph {model.graph_path or ''} ends in {last}, not a DETR decoder: only a detector "
                          "exports (images -> labels, boxes, scores)",
                          where="-c", hint="export a detector graph, e.g. graphs/examples/tiny_deim.yaml")
    preprocessing = eval_preprocessing(cfg, model.imgsz)
    preprocessing["imgsz"] = [int(v) for v in as_size_hw(imgsz or preprocessing["imgsz"])]
    built = DeployModel(model.cpu(), postprocessor.cpu()).eval(), preprocessing, names
    return (*built, meta) if with_meta else built


def require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"`{module}` is not installed", hint='pip install -e ".[export]"') from None


def export_onnx(detector: nn.Module, path: str | Path, imgsz, opset: int = 17, dynamic_batch: bool = False,
                simplify: bool = False, metadata: dict[str, str] | None = None, output_names=OUTPUT_NAMES) -> Path:
    """Trace `detector` (called with images and orig_target_sizes) at batch 1 and write an ONNX
    file (batch dimension named when dynamic)."""
    onnx = require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = imgsz
    example = (torch.rand(1, 3, height, width), torch.tensor([[width, height]], dtype=torch.int64))
    axes = {name: {0: "batch"} for name in (*INPUT_NAMES, *output_names)} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns where Python reads a shape (query count, anchor cache, top-k size): all of
        # them depend on H and W only, which the exported graph fixes
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(detector, example, str(path), input_names=list(INPUT_NAMES),
                          output_names=list(output_names), opset_version=opset, dynamic_axes=axes,
                          do_constant_folding=True, dynamo=False)
    model = onnx.load(str(path))
    if simplify:
        model = require("onnxslim").slim(model)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def check_images(paths, preprocessing: dict, count_random: int = 2, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(name, preprocessed image [3,H,W]): uniform-noise images, then the real photos in `paths`
    (default: the photo matplotlib ships, so the check needs no download)."""
    height, width = preprocessing["imgsz"]
    generator = torch.Generator().manual_seed(seed)
    images = [(f"random-{i}", torch.rand(3, height, width, generator=generator)) for i in range(count_random)]
    if not paths:
        from matplotlib import cbook
        paths = [cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)]
    for path in map(Path, paths):
        tensor, _ = preprocess_image(load_rgb(path), [height, width], preprocessing["letterbox"],
                                     preprocessing["normalize"])
        images.append((path.name, tensor))
    return images


def compare_top(reference, candidate, top: int = 10) -> tuple[float, float]:
    """Largest score and box difference over the `top` reference detections of one image.

    Each reference detection is paired with the candidate detection of the same label and nearest box
    among the candidate's first 2*top, so two near-equal scores that swap rank do not count as a miss."""
    ref_labels, ref_boxes, ref_scores = reference
    labels, boxes, scores = candidate
    top = min(top, len(ref_scores))
    pool = slice(0, 2 * top)
    worst_score = worst_box = 0.0
    for label, box, score in zip(ref_labels[:top], ref_boxes[:top], ref_scores[:top]):
        same = labels[pool] == label
        if not same.any():
            return float("inf"), float("inf")
        distance = (boxes[pool][same] - box).abs().amax(-1)
        nearest = int(distance.argmin())
        worst_box = max(worst_box, float(distance[nearest]))
        worst_score = max(worst_score, float((scores[pool][same][nearest] - score).abs()))
    return worst_score, worst_box


def check_onnx(detector: DeployModel, path: str | Path, images, top: int = 10, tol: float = 1e-3) -> dict:
    """Run each image through PyTorch and onnxruntime (one by one, and all at once when the file
    has a dynamic batch) and compare the top detections. Boxes are compared in pixels."""
    session = OnnxDetector(path)
    rows, passed = [], True
    height, width = images[0][1].shape[1:]
    batch = torch.stack([tensor for _, tensor in images])
    sizes = torch.tensor([[width, height]] * len(images), dtype=torch.int64)
    with torch.no_grad():
        reference = [detector(tensor[None], sizes[:1]) for _, tensor in images]
    runs = [("batch 1", [session(tensor[None], sizes[:1]) for _, tensor in images])]
    if session.dynamic_batch:
        together = session(batch, sizes)
        runs.append((f"batch {len(images)}", [tuple(out[i:i + 1] for out in together) for i in range(len(images))]))
    for run_name, outputs in runs:
        for (name, _), ref, out in zip(images, reference, outputs):
            score_diff, box_diff = compare_top([t[0] for t in ref], [t[0] for t in out], top)
            ok = score_diff <= tol and box_diff <= tol
            passed &= ok
            rows.append({"image": name, "run": run_name, "score_diff": score_diff, "box_diff_px": box_diff,
                         "top_score": float(ref[2][0, 0]), "ok": ok})
    return {"passed": passed, "rows": rows, "top": top, "tol": tol}


def format_check(report: dict) -> str:
    lines = [f"check: top {report['top']} detections, PyTorch vs onnxruntime (tolerance {report['tol']:g})",
             f"  {'image':<22}{'run':<10}{'best score':>11}{'max |d score|':>15}{'max |d box| px':>16}"]
    for row in report["rows"]:
        lines.append(f"  {row['image']:<22}{row['run']:<10}{row['top_score']:>11.4f}{row['score_diff']:>15.2e}"
                     f"{row['box_diff_px']:>16.2e}  {'ok' if row['ok'] else 'MISMATCH'}")
    lines.append("check passed" if report["passed"] else
                 "check FAILED (with untrained weights, exactly tied encoder scores make the query top-k "
                 "order implementation-defined; bench/export_check.py nudges the weights and compares every query)")
    return "\n".join(lines)


def export_tensorrt(onnx_path: Path, imgsz, dynamic_batch: bool, fp16: bool = True, max_batch: int = 32) -> Path | None:
    """Build a serialized TensorRT engine next to the ONNX file. Needs a CUDA GPU and `tensorrt`;
    without them print why and the equivalent `trtexec` command, and return None."""
    engine_path = onnx_path.with_suffix(".engine")
    missing = [] if torch.cuda.is_available() else ["no CUDA GPU is visible"]
    try:
        import tensorrt as trt
    except ImportError:
        missing.append("the `tensorrt` package is not installed")
    if missing:
        print(f"--trt skipped: {' and '.join(missing)}. On a machine with both run:\n"
              f"  trtexec --onnx={onnx_path} --saveEngine={engine_path}{' --fp16' if fp16 else ''}")
        return None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if dynamic_batch:
        height, width = imgsz
        profile = builder.create_optimization_profile()
        profile.set_shape("images", (1, 3, height, width), (1, 3, height, width), (max_batch, 3, height, width))
        profile.set_shape("orig_target_sizes", (1, 2), (1, 2), (max_batch, 2))
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ConfigError(f"TensorRT failed to build an engine from {onnx_path}", hint="see the TensorRT log above")
    engine_path.write_bytes(bytes(engine))
    return engine_path


def calibration_images(folder: str | Path, limit: int) -> list[Path]:
    """Up to `limit` images of `folder` (sorted, spread evenly over the folder when it holds more)."""
    from engine.inference import IMAGE_SUFFIXES

    if limit < 1:
        raise ArgumentError(f"--calib-images must be 1 or more, got {limit}", where="--calib-images",
                            hint="a few dozen images suffice (default 64)")
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"calibration folder not found: {folder}", where="--calib",
                          hint="a folder of images like the ones the model will see (a few dozen suffice)")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ConfigError(f"no images in {folder}", where="--calib", hint="add .jpg/.png images of your data")
    step = max(1, len(paths) // limit)
    return paths[::step][:limit]


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol: one preprocessed image per `get_next()`."""

    def __init__(self, paths: list[Path], preprocessing: dict):
        self.paths, self.pre, self.position = paths, preprocessing, 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.paths):
            return None
        image = load_rgb(self.paths[self.position])  # as training and predict read it: EXIF-upright, 16-bit scaled
        tensor, _ = preprocess_image(image, self.pre["imgsz"], self.pre["letterbox"], self.pre["normalize"])
        self.position += 1
        height, width = tensor.shape[1:]
        return {"images": tensor[None].numpy(), "orig_target_sizes": torch.tensor([[width, height]]).numpy()}


def check_int8_ops(op_types) -> list[str]:
    """The op types to quantize as a list; names that are not ONNX op types are refused."""
    onnx = require("onnx")
    op_types = [op_types] if isinstance(op_types, str) else list(op_types)
    unknown = sorted(op for op in op_types if not onnx.defs.has(op))
    if unknown or not op_types:
        raise ArgumentError(f"not ONNX op types: {', '.join(unknown) or '(none given)'}", where="--int8-ops",
                            hint="give ONNX names as the graph has them, e.g. Conv Add Concat MaxPool Relu")
    return op_types


INT8_OPS = ("Conv", "Add", "Concat", "MaxPool", "Relu")


def narrow_convs(model, min_channels: int) -> list[str]:
    """Names of the Conv nodes with fewer than `min_channels` input or output channels: the
    3-channel conv that reads the image, HGNetv2's 8-channel stem convs. With AVX-512 VNNI their int8
    form ran about 2x slower than fp32 (a reduction this shallow does not fill the int8 kernels, and
    each adds a quantize/dequantize pair); the first conv is also the one usually kept float for accuracy."""
    weights = {tensor.name: tensor.dims for tensor in model.graph.initializer}
    narrow = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        groups = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
        out_channels, in_per_group = weights[node.input[1]][:2]
        if min(out_channels, in_per_group * groups) < min_channels:
            narrow.append(node.name)
    return narrow


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib_dir: str | Path, preprocessing: dict,
                  max_images: int = 64, op_types=INT8_OPS, min_channels: int = 16) -> Path:
    """Write an int8 copy of an exported file: static (calibrated) QDQ quantization of `op_types`,
    weights int8 per output channel, activations uint8 with MinMax ranges seen on the calibration
    images. Convolutions with fewer than `min_channels` input or output channels stay float (0:
    none do). The file keeps the fp32 file's metadata (preprocessing, class names)."""
    import tempfile

    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    op_types = check_int8_ops(op_types)
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    paths = calibration_images(calib_dir, max_images)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        # shape inference and graph optimisation first, as onnxruntime recommends before quantizing
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        float_convs = narrow_convs(onnx.load(str(prepared)), min_channels)
        quantize_static(str(prepared), str(out_path), _CalibrationReader(paths, preprocessing),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types, per_channel=True,
                        nodes_to_exclude=float_convs,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    model, source = onnx.load(str(out_path)), onnx.load(str(fp32_path), load_external_data=False)
    present = {entry.key for entry in model.metadata_props}
    for entry in source.metadata_props:
        if entry.key not in present:
            model.metadata_props.add().CopyFrom(entry)
    onnx.save(model, str(out_path))
    return out_path


def evaluate_onnx(path: str | Path, ann_file: str | Path, img_folder: str | Path,
                  category_ids: list | None = None, threads: int | None = None) -> list[float]:
    """The 12 COCO numbers of an exported file on a COCO validation set, images preprocessed as the
    file's metadata says. Labels map to `category_ids` (the checkpoint's), or to the annotation
    file's categories in id order (how training maps them)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from engine.inference import Predictor
    from engine.onnx_runtime import OnnxDetector
    from metrics.coco_eval import CocoEvaluator

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    category_ids = list(category_ids or sorted(coco.getCatIds()))
    detector = OnnxDetector(path, threads=threads)
    predictor = Predictor(detector, None, detector.preprocessing, torch.device("cpu"), 0.0, [])
    evaluator = CocoEvaluator(coco, category_ids, [str(c) for c in category_ids])
    for image_id in sorted(coco.getImgIds()):
        detections = predictor(load_rgb(Path(img_folder) / coco.imgs[image_id]["file_name"]))
        evaluator.update({image_id: {"labels": torch.tensor([d["label"] for d in detections], dtype=torch.int64),
                                     "boxes": torch.tensor([d["box"] for d in detections]).reshape(-1, 4),
                                     "scores": torch.tensor([d["score"] for d in detections])}})
    return evaluator.evaluate(verbose=False)["stats"]
