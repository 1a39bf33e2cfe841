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
    """(model in eval mode, checkpoint meta, output folder, iterator of (image path, the stem its
    outputs are named by, input tensor)). Inputs sharing a stem (x.jpg, x.png) get distinct ones; an
    image that cannot be read is skipped with a line."""
    from core.errors import ConfigError, DataError
    from data.cache import load_rgb
    from data.pipeline import eval_preprocessing
    from data.transforms import preprocess_image
    from engine.inference import annotated_names, check_output, collect_inputs
    from models.factory import load_detector

    source, out_dir = Path(args.input), Path(args.output)
    images, _ = collect_inputs(source)
    if not images:
        raise ConfigError(f"no images in {source}, only videos", where="-i", hint="these tools read images")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"-o {out_dir} is a file", where="-o", hint="give a folder (it is created if missing)")
    names = annotated_names(images, [])
    check_output(out_dir, source, names)
    device = torch.device(args.device)
    cfg = load_config(args.config)
    model, _, meta = load_detector(args.resume, cfg, device)
    pre = eval_preprocessing(cfg, model.imgsz)
    out_dir.mkdir(parents=True, exist_ok=True)

    def inputs():
        for path in images:
            try:
                image = load_rgb(path)
            except DataError as err:  # one broken file must not cost the others' figures
                print(f"skipped {path}: {err.message}")
                continue
            tensor, _ = preprocess_image(image, pre["imgsz"], pre["letterbox"], pre["normalize"])
            yield path, Path(names[path]).stem, tensor.to(device)

    return model, meta, out_dir, inputs()
