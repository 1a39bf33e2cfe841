"""Detect objects in images, a folder or a video with a trained checkpoint.

    python predict.py -c CONFIG -r CKPT -i INPUT [-o OUT] [--conf 0.45] [--classes "a,b,c"] [-d cpu]
    python predict.py --backend onnx -m model.onnx -i INPUT [-c CONFIG] ...   # a file from export.py

Writes annotated images (or an annotated video) and `detections.json` under OUT, and prints a
table of detections. Class names default to those stored in the checkpoint. Preprocessing is the
evaluation pipeline (`data.transforms.preprocess_image`), so predictions equal what --test-only saw.
With `--backend onnx` onnxruntime runs the exported file; its preprocessing and class names come
from the file's metadata (or from -c's val pipeline when given).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models.errors import CheckpointError, ConfigError, cli_main

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def eval_preprocessing(cfg: dict, imgsz) -> dict:
    """Resize size/letterbox and normalisation of the val pipeline (what the model was evaluated with)."""
    from engine.config import get

    options = {"imgsz": list(imgsz), "letterbox": False, "normalize": False}
    for op in get(cfg, "val_dataloader.dataset.transforms.ops", []) or []:
        if not isinstance(op, dict):
            continue
        if op.get("type") == "Resize":
            options["imgsz"] = op.get("size", options["imgsz"])
            options["letterbox"] = bool(op.get("letterbox", False))
        if op.get("type") == "Normalize":
            options["normalize"] = (op["mean"], op["std"]) if "mean" in op and "std" in op else True
    return options


def load_detector(cfg: dict, checkpoint_path: str, device: torch.device):
    """Rebuild the model from the checkpoint's graph spec (falling back to the config's graph)."""
    from engine import checkpoint
    from models import build_model
    from models.postprocess import PostProcessor

    state = checkpoint.load(checkpoint_path)
    meta = state.get("meta", {})
    weights, _ = checkpoint.model_weights(state)
    graph = meta.get("graph_spec") or cfg.get("graph")
    if not graph:
        raise ConfigError("no graph to build: the checkpoint stores none and the config has no `graph`", where="graph")
    nc = meta.get("nc") or cfg.get("nc")
    model = build_model(graph, nc=nc, scale=meta.get("scale") or cfg.get("scale"),
                        imgsz=meta.get("imgsz") or cfg.get("imgsz"), check=False)
    weights, conversion = checkpoint.convert_if_official(weights, model)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint_path} does not fit the graph: {str(err).splitlines()[0]}",
                              hint="pass the config the checkpoint was trained with") from None
    post_cfg = {k: v for k, v in (cfg.get("postprocessor") or {}).items() if k != "type"}
    post_cfg["num_classes"] = model.nc
    postprocessor = PostProcessor(**post_cfg)
    return model.to(device).eval(), postprocessor.to(device).eval(), meta


def collect_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"input not found: {path}", where="-i", hint="an image, a video or a folder of them")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not images and not videos:
        raise ConfigError(f"no images or videos in {path}", where="-i",
                          hint=f"supported: {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}")
    return images, videos


class Predictor:
    """`postprocessor=None` means `model` already ends in the post-processor and returns the
    (labels, boxes, scores) tuple, as an exported file run by `engine.onnx_runtime.OnnxDetector` does."""

    def __init__(self, model, postprocessor, preprocessing: dict, device, conf: float, names: list[str]):
        self.model, self.postprocessor, self.pre = model, postprocessor, preprocessing
        self.device, self.conf, self.names = device, conf, names

    def detect(self, images: torch.Tensor, sizes: torch.Tensor) -> dict:
        """Detections of the first image: labels, boxes (xyxy, network-input pixels), scores."""
        if self.postprocessor is None:
            labels, boxes, scores = self.model(images, sizes)
            return {"labels": labels[0], "boxes": boxes[0], "scores": scores[0]}
        return self.postprocessor(self.model(images.to(self.device)), sizes.to(self.device))[0]

    @torch.no_grad()
    def __call__(self, pil_image) -> list[dict]:
        from data.transforms import preprocess_image, restore_boxes

        tensor, info = preprocess_image(pil_image, self.pre["imgsz"], self.pre["letterbox"], self.pre["normalize"])
        height, width = tensor.shape[1:]
        result = self.detect(tensor[None], torch.tensor([[width, height]]))
        keep = result["scores"] >= self.conf
        boxes = restore_boxes(result["boxes"][keep].float().cpu(), info["scale"], info["pad"], info["orig_size"])
        return [{"label": int(label), "class": self.name(int(label)), "score": round(float(score), 4),
                 "box": [round(v, 1) for v in box]}
                for label, score, box in zip(result["labels"][keep].tolist(), result["scores"][keep].tolist(),
                                             boxes.tolist())]

    def name(self, label: int) -> str:
        return self.names[label] if label < len(self.names) else str(label)


def draw(pil_image, detections: list[dict]):
    from PIL import ImageDraw

    from engine.logger import PALETTE

    image = pil_image.convert("RGB")
    pen = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 400))
    for det in detections:
        color = PALETTE[det["label"] % len(PALETTE)]
        x0, y0, x1, y1 = det["box"]
        pen.rectangle([x0, y0, x1, y1], outline=color, width=width)
        text = f"{det['class']} {det['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text)
        pen.rectangle([x0, y0 - (bottom - top) - 2, x0 + (right - left) + 2, y0], fill=color)
        pen.text((x0 + 1, y0 - (bottom - top) - 2), text, fill=(255, 255, 255))
    return image


def predict_video(predictor: Predictor, path: Path, out_dir: Path) -> list[dict]:
    import cv2
    import numpy as np
    from PIL import Image

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ConfigError(f"cannot open video {path}", where="-i")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    target = out_dir / f"{path.stem}.mp4"
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    frames = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        detections = predictor(image)
        writer.write(cv2.cvtColor(np.asarray(draw(image, detections)), cv2.COLOR_RGB2BGR))
        frames.append({"frame": index, "detections": detections})
        index += 1
    capture.release()
    writer.release()
    print(f"{path.name}: {index} frames, {sum(len(f['detections']) for f in frames)} detections -> {target}")
    return frames


def format_table(name: str, detections: list[dict]) -> str:
    lines = [f"{name}: {len(detections)} detections"]
    for i, det in enumerate(detections, 1):
        box = ", ".join(f"{v:.0f}" for v in det["box"])
        lines.append(f"  [{i}] {det['class']:<16} {det['score']:.3f}  ({box})")
    return "\n".join(lines)


def class_names(classes: str | None, stored: list[str], nc: int) -> list[str]:
    if not classes:
        return stored
    names = [n.strip() for n in classes.split(",")]
    if len(names) != nc:
        raise ConfigError(f"--classes gives {len(names)} names but the model has {nc} classes", where="--classes")
    return names


def onnx_predictor(args) -> Predictor:
    """A Predictor over an exported file; -c, when given, supplies the preprocessing instead of the file."""
    from engine.config import load_config
    from engine.onnx_runtime import OnnxDetector

    if not args.model:
        raise ConfigError("--backend onnx needs -m model.onnx", where="-m", hint="write one with `python export.py`")
    detector = OnnxDetector(args.model)
    preprocessing = detector.preprocessing
    if args.config:
        # the file's input size is fixed at export; the config gives resize mode and normalisation
        preprocessing = {**eval_preprocessing(load_config(args.config, args.update), detector.imgsz),
                         "imgsz": detector.imgsz}
    names = class_names(args.classes, detector.names, detector.nc)
    return Predictor(detector, None, preprocessing, torch.device("cpu"), args.conf, names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", help="run config (required with the torch backend)")
    parser.add_argument("-r", "--resume", help="checkpoint to predict with (EMA weights preferred)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("-m", "--model", help="ONNX file written by export.py (--backend onnx)")
    parser.add_argument("-i", "--input", required=True, help="image, video or folder")
    parser.add_argument("-o", "--output", default="predictions", help="output folder")
    parser.add_argument("--conf", type=float, default=0.45, help="score threshold")
    parser.add_argument("--classes", help='class names, comma separated: "a,b,c" (default: from the checkpoint)')
    parser.add_argument("-d", "--device", default=None)
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    from PIL import Image

    from engine.config import load_config

    if args.backend == "onnx":
        predictor = onnx_predictor(args)
    else:
        if not (args.config and args.resume):
            raise ConfigError("the torch backend needs -c CONFIG and -r CKPT", where="-c/-r",
                              hint="or run an exported file: --backend onnx -m model.onnx")
        cfg = load_config(args.config, args.update)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, postprocessor, meta = load_detector(cfg, args.resume, device)
        names = class_names(args.classes, list(meta.get("names") or []), model.nc)
        predictor = Predictor(model, postprocessor, eval_preprocessing(cfg, model.imgsz), device, args.conf, names)
    images, videos = collect_inputs(Path(args.input))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for path in images:
        with Image.open(path) as image:
            detections = predictor(image)
            draw(image, detections).save(out_dir / f"{path.stem}.jpg", quality=95)
        print(format_table(path.name, detections))
        results[path.name] = detections
    for path in videos:
        results[path.name] = predict_video(predictor, path, out_dir)
    (out_dir / "detections.json").write_text(json.dumps(results, indent=1))
    print(f"annotated output and detections.json written to {out_dir}")
    return results


if __name__ == "__main__":
    cli_main(main)
