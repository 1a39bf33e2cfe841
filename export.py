"""Export a detector to ONNX: the deploy-form network and the post-processor in one graph.

    python export.py -c CONFIG -r CKPT [-o model.onnx] [--imgsz H W] [--opset 17] [--dynamic-batch]
                     [--simplify] [--check] [--images IMG ...] [--trt]
    python export.py -c graphs/deim/deim-n.yaml --random-weights --check     # inspect a graph, no training
    python export.py -c CONFIG -r CKPT --int8 --calib IMAGES_DIR            # also an int8 file for the CPU

Inputs: `images` [B,3,H,W] float32, preprocessed as in evaluation, and `orig_target_sizes` [B,2]
int64 (w, h). Outputs: `labels` [B,K] int64, `boxes` [B,K,4] xyxy scaled to orig_target_sizes,
`scores` [B,K] -- the official D-FINE/DEIM layout, so their ONNX/TensorRT tooling reads it.
`-c` is a run config (its val pipeline gives the preprocessing) or a bare graph YAML.
The preprocessing and the class names are stored in the file's metadata for `predict.py --backend onnx`.

The exporter and the checks are `engine.onnx_export`'s. `--check` runs onnxruntime on random images and on real photos and compares the top detections
with PyTorch. `--trt` builds a TensorRT engine; it needs a CUDA GPU and `tensorrt` and is skipped
with a message otherwise.

`--int8 --calib DIR` also writes `<output>.int8.onnx`: onnxruntime static quantization of the
convolutions and the residual sums, joins, pools and ReLUs between them (or of the `--int8-ops` op
types; convolutions under `--int8-min-channels` channels stay float), calibrated on up to
`--calib-images` images of DIR.
When the config has a validation set (or with `--val-ann/--val-images`), the fp32 and int8 files are
both scored on it and their COCO AP printed side by side, so the accuracy the int8 file gives up is
known before it ships.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import cli_main
from core.errors import ConfigError
from engine.onnx_export import (INT8_OPS, build_for_export, calibration_images, check_images, check_int8_ops,
                                check_onnx, evaluate_onnx, export_onnx, export_tensorrt, format_check,
                                load_config_or_graph, quantize_int8)
from engine.onnx_runtime import metadata_for
from models.graph import check_imgsz

MIN_OPSET = 16   # GridSample
MAX_OPSET = 20   # torch.onnx's TorchScript exporter (dynamo=False), torch 2.14


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="run config (.yml) or graph YAML")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("-r", "--resume", help="checkpoint to export (EMA weights preferred)")
    weights.add_argument("--random-weights", action="store_true", help="export the graph untrained (to inspect it)")
    parser.add_argument("-o", "--output", help="ONNX file (default: next to the checkpoint, or model.onnx)")
    parser.add_argument("--imgsz", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the eval size)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--dynamic-batch", action="store_true", help="name the batch dimension (any batch size)")
    parser.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch")
    parser.add_argument("--images", nargs="+", help="real images for --check (default: a photo matplotlib ships)")
    parser.add_argument("--trt", action="store_true", help="also build a TensorRT engine (CUDA GPU + tensorrt)")
    parser.add_argument("--int8", action="store_true", help="also write an int8 file (onnxruntime static quantization)")
    parser.add_argument("--calib", help="folder of calibration images for --int8 (your data, a few dozen images)")
    parser.add_argument("--calib-images", type=int, default=64, help="calibration images used at most")
    parser.add_argument("--int8-ops", nargs="+", default=list(INT8_OPS), metavar="OP",
                        help="ONNX op types to quantize (default: %(default)s; Conv alone keeps the residual sums, "
                             "joins and pools float, slower; check the printed AP either way)")
    parser.add_argument("--int8-min-channels", type=int, default=16, metavar="N",
                        help="convolutions with fewer input or output channels stay float (default 16: the first "
                             "conv and HGNetv2's narrow stem convs, slower in int8; 0 quantizes every conv)")
    parser.add_argument("--val-ann", help="COCO annotation file to score fp32 vs int8 (default: the config's val set)")
    parser.add_argument("--val-images", help="its image folder")
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    if args.imgsz:
        check_imgsz(list(args.imgsz), "--imgsz")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise ConfigError(f"--opset {args.opset} is outside {MIN_OPSET}..{MAX_OPSET}", where="--opset",
                          hint=f"{MIN_OPSET} is the first with grid_sample (the decoders' sampling), {MAX_OPSET} the "
                               "last torch's exporter writes; 17 is the default")
    if args.int8 and not args.calib:
        raise ConfigError("--int8 needs calibration images", where="--calib",
                          hint="pass --calib DIR, a folder of images like the ones the model will see")
    if args.int8:
        check_int8_ops(args.int8_ops)
        if args.int8_min_channels < 0:
            raise ConfigError(f"--int8-min-channels must be 0 or more, got {args.int8_min_channels}",
                              where="--int8-min-channels", hint="0 quantizes every conv; 16 is the default")
        calibration_images(args.calib, args.calib_images)  # the folder and the count, before the export runs
    output = Path(args.output or (Path(args.resume).with_suffix(".onnx") if args.resume else "model.onnx"))
    check_output(output, args.int8, [args.config, args.resume])
    cfg = load_config_or_graph(args.config, args.update)
    detector, preprocessing, names, meta = build_for_export(cfg, args.resume, args.imgsz, with_meta=True)
    graph = str(detector.model.graph_path or "")
    metadata = metadata_for(preprocessing, names, detector.model.nc, graph)
    path = export_onnx(detector, output, preprocessing["imgsz"], args.opset, args.dynamic_batch, args.simplify, metadata)
    height, width = preprocessing["imgsz"]
    batch = "B" if args.dynamic_batch else "1"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, opset {args.opset}): "
          f"images [{batch},3,{height},{width}], orig_target_sizes [{batch},2] -> labels, boxes, scores")
    report = None
    if args.check:
        report = check_onnx(detector, path, check_images(args.images, preprocessing))
        print(format_check(report))
    if args.int8:
        write_int8(args, cfg, path, preprocessing, meta)
    if args.trt:
        engine = export_tensorrt(path, preprocessing["imgsz"], args.dynamic_batch)
        if engine:
            print(f"wrote {engine}")
    if report is not None and not report["passed"]:
        raise SystemExit(1)
    return path


def check_output(output: Path, int8: bool, inputs: list) -> None:
    """Refuse an output that is not an .onnx file name or would replace an input (the checkpoint, the
    config): the export is written over whatever the path names."""
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {output} is not an .onnx file name", where="-o",
                          hint="name the file to write, e.g. -o model.onnx")
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder", where="-o", hint="name the file to write, e.g. -o model.onnx")
    written = [output] + ([output.with_suffix(".int8.onnx")] if int8 else [])
    for path in written:
        for source in filter(None, inputs):
            if path.resolve() == Path(source).resolve():
                raise ConfigError(f"-o {output} would write {path} over the input {source}", where="-o",
                                  hint="choose another output file name")


def write_int8(args, cfg: dict, fp32_path: Path, preprocessing: dict, meta: dict) -> Path:
    """The int8 file next to the fp32 one, and both files' AP on the validation set when there is one."""
    path = quantize_int8(fp32_path, fp32_path.with_suffix(".int8.onnx"), args.calib, preprocessing, args.calib_images,
                         op_types=args.int8_ops, min_channels=args.int8_min_channels)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, int8 {' '.join(args.int8_ops)}, convs under "
          f"{args.int8_min_channels} channels float, calibrated on {args.calib})")
    dataset = (cfg.get("val_dataloader") or {}).get("dataset") or {}
    ann, images = args.val_ann or dataset.get("ann_file"), args.val_images or dataset.get("img_folder")
    if ann is None or images is None:
        print("no validation set (the config has none; give --val-ann and --val-images): int8 accuracy not checked")
        return path
    stats = {name: evaluate_onnx(p, ann, images, meta.get("category_ids")) for name, p in (("fp32", fp32_path),
                                                                                             ("int8", path))}
    print(f"accuracy on {ann}: AP50:95 fp32 {stats['fp32'][0]:.4f}, int8 {stats['int8'][0]:.4f} "
          f"({100 * (stats['int8'][0] - stats['fp32'][0]):+.2f} points); AP50 fp32 {stats['fp32'][1]:.4f}, "
          f"int8 {stats['int8'][1]:.4f}")
    return path


if __name__ == "__main__":
    cli_main(main)
