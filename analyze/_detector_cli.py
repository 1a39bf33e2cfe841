"""Shared command-line set-up of the tools that look inside a trained graph (heatmap, featuremap):
the config + checkpoint + input flags, the rebuilt detector, and each image as the model saw it in
evaluation."""
import argparse
from pathlib import Path

import torch

from engine.config import load_config


def add_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-r", "--resume", required=True, help="checkpoint")
    parser.add_argument("-i", "--input", required=True, help="an image or a folder of images")
    parser.add_argument("--layers", type=int, nargs="+", required=True, help="graph row indices")
    parser.add_argument("-o", "--output", default=default_output)
    parser.add_argument("-d", "--device", default="cpu")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def open_detector(args):
    """(model in eval mode, checkpoint meta, output folder, iterator of (image path, input tensor))."""
    from PIL import Image

    from data.pipeline import eval_preprocessing
    from data.transforms import preprocess_image
    from engine.inference import collect_inputs
    from models.factory import load_detector

    device = torch.device(args.device)
    cfg = load_config(args.config)
    model, _, meta = load_detector(args.resume, cfg, device)
    pre = eval_preprocessing(cfg, model.imgsz)
    images, _ = collect_inputs(Path(args.input))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)

    def inputs():
        for path in images:
            tensor, _ = preprocess_image(Image.open(path), pre["imgsz"], pre["letterbox"], pre["normalize"])
            yield path, tensor.to(device)

    return model, meta, out_dir, inputs()
