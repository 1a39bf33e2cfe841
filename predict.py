"""Detect objects in images, a folder or a video with a trained checkpoint.

    python predict.py -c CONFIG -r CKPT -i INPUT [-o OUT] [-t 0.45] [--classes "a,b,c"] [-d cpu]
                      [--line-width N] [--font-size N]
    python predict.py --backend onnx -m model.onnx -i INPUT [-c CONFIG] ...   # a file from export.py

Writes annotated images (or an annotated video) and `detections.json` under OUT, and prints a
table of detections. With one image as input and `-o result.jpg` (an image name), that file is
written, with `result.json` beside it. Annotated files take the input's stem (x_png.jpg where two
inputs share one). An input that cannot be read is skipped and listed (in the
printout and in the JSON's `skipped`); the others are still predicted. Class names default to those stored in the checkpoint. Preprocessing is the
evaluation pipeline (`data.transforms.preprocess_image`), so predictions equal what --test-only saw.
With `--backend onnx` onnxruntime runs the exported file; its preprocessing and class names come
from the file's metadata (or from -c's val pipeline when given).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from core.checkpoint_io import atomic_write_text
from core.drawing import draw_detections
from core.errors import ConfigError, DataError, cli_main
from core.text import display_width
from data.cache import load_rgb
from data.pipeline import eval_preprocessing
from engine.inference import IMAGE_SUFFIXES, Predictor, annotated_names, check_output, collect_inputs
from models.factory import load_detector

def predict_video(predictor: Predictor, path: Path, target: Path, style: dict) -> list[dict]:
    import cv2
    import numpy as np
    from PIL import Image

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ConfigError(f"cannot open video {path}", where="-i")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    frames = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        detections = predictor(image)
        writer.write(cv2.cvtColor(np.asarray(draw_detections(image, detections, **style)), cv2.COLOR_RGB2BGR))
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
        pad = " " * max(0, 16 - display_width(det["class"]))   # by display width: a CJK glyph takes two columns
        lines.append(f"  [{i}] {det['class']}{pad} {det['score']:.3f}  ({box})")
    return "\n".join(lines)


def class_names(classes: str | None, stored: list[str], nc: int) -> list[str]:
    if not classes:
        return stored
    names = [n.strip() for n in classes.split(",")]
    if not all(names):
        raise ConfigError(f"--classes {classes!r} has an empty name", where="--classes",
                          hint='give every class a name: "a,b,c"')
    if len(names) != nc:
        raise ConfigError(f"--classes gives {len(names)} names but the model has {nc} classes", where="--classes")
    return names


def onnx_predictor(args) -> Predictor:
    """A Predictor over an exported file; -c, when given, supplies the preprocessing instead of the file."""
    from engine.config import load_config
    from engine.onnx_runtime import OnnxDetector

    if not args.model:
        raise ConfigError("--backend onnx needs -m model.onnx", where="-m", hint="write one with `python export.py`")
    # the file fixes its weights and graph at export: a checkpoint here would be ignored without a word
    if args.resume:
        raise ConfigError(f"-r {args.resume} has no effect with --backend onnx: the ONNX file holds its weights",
                          where="-r", hint="drop -r, or export that checkpoint: python export.py -c CFG -r CKPT")
    if args.update and not args.config:
        raise ConfigError("-u changes a config, and --backend onnx has none without -c", where="-u",
                          hint="pass -c CFG (its val pipeline sets the resize and normalisation), or drop -u")
    detector = OnnxDetector(args.model)
    preprocessing = detector.preprocessing
    if args.config:
        # the file's input size is fixed at export; the config gives resize mode and normalisation
        preprocessing = {**eval_preprocessing(load_config(args.config, args.update), detector.imgsz),
                         "imgsz": detector.imgsz}
    names = class_names(args.classes, detector.names, detector.nc)
    return Predictor(detector, None, preprocessing, torch.device("cpu"), args.conf, names)


def output_paths(inputs: Path, images: list[Path], videos: list[Path], output: str) -> tuple[Path, Path | None]:
    """(folder for the annotated files, or the single annotated image's own path; the JSON's path)."""
    out = Path(output)
    if out.suffix.lower() in IMAGE_SUFFIXES:
        if len(images) != 1 or videos:
            raise ConfigError(f"-o {out} names one image, but the input holds {len(images) + len(videos)} files",
                              where="-o", hint="give -o a folder for several inputs")
        return out, out.with_suffix(".json")
    return out, out / "detections.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", help="run config (required with the torch backend)")
    parser.add_argument("-r", "--resume", help="checkpoint to predict with (EMA weights preferred)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("-m", "--model", help="ONNX file written by export.py (--backend onnx)")
    parser.add_argument("-i", "--input", required=True, help="image, video or folder")
    parser.add_argument("-o", "--output", default="predictions", help="output folder, or an image file for one image")
    parser.add_argument("-t", "--conf", "--threshold", dest="conf", type=float, default=0.45, help="score threshold")
    parser.add_argument("--classes", help='class names, comma separated: "a,b,c" (default: from the checkpoint)')
    parser.add_argument("--line-width", type=int, help="box line width in pixels (default: from the image size)")
    parser.add_argument("--font-size", type=int, help="label font size in pixels (default: from the image size)")
    parser.add_argument("-d", "--device", default=None)
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if not 0.0 <= args.conf <= 1.0:
        raise ConfigError(f"the score threshold must be in [0, 1], got {args.conf}", where="-t/--conf",
                          hint="a detection's score is a probability, e.g. -t 0.4")
    for flag in ("line_width", "font_size"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive number of pixels", where=f"--{flag}")

    from core.dist import parse_device
    from engine.config import load_config

    inputs = Path(args.input)
    images, videos = collect_inputs(inputs)
    target, json_path = output_paths(inputs, images, videos, args.output)
    output_names = annotated_names(images, videos)
    check_output(target, inputs, output_names)
    if args.backend == "onnx":
        predictor = onnx_predictor(args)
    else:
        if not (args.config and args.resume):
            raise ConfigError("the torch backend needs -c CONFIG and -r CKPT", where="-c/-r",
                              hint="or run an exported file: --backend onnx -m model.onnx")
        cfg = load_config(args.config, args.update)
        device = parse_device(args.device)
        model, postprocessor, meta = load_detector(args.resume, cfg, device)
        names = class_names(args.classes, list(meta.get("names") or []), model.nc)
        predictor = Predictor(model, postprocessor, eval_preprocessing(cfg, model.imgsz), device, args.conf, names)
    single = target.suffix.lower() in IMAGE_SUFFIXES
    (target.parent if single else target).mkdir(parents=True, exist_ok=True)
    style = {"line_width": args.line_width, "font_size": args.font_size}
    results, skipped = {}, {}
    for path in images:
        try:
            image = load_rgb(path)
        except DataError as err:  # one broken file must not cost the others' results
            skipped[path.name] = err.message
            print(f"skipped {path}: {err.message}")
            continue
        detections = predictor(image)
        draw_detections(image, detections, **style).save(target if single else target / output_names[path],
                                                         quality=95)
        print(format_table(path.name, detections))
        results[path.name] = detections
    for path in videos:
        try:
            results[path.name] = predict_video(predictor, path, target / output_names[path], style)
        except ConfigError as err:
            skipped[path.name] = err.message
            print(f"skipped {path}: {err.message}")
    atomic_write_text(json_path, json.dumps({**results, **({"skipped": skipped} if skipped else {})}, indent=1,
                                            ensure_ascii=False))
    print(f"annotated output written to {target}, detections to {json_path}")
    if skipped:
        print(f"{len(skipped)} of {len(images) + len(videos)} inputs skipped: {', '.join(skipped)}")
        if not results:
            raise DataError(f"no input could be read ({len(skipped)} skipped)", where=str(inputs),
                            hint="check the files listed above")
    return results


if __name__ == "__main__":
    cli_main(main)
