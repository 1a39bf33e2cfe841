"""Export official-size graphs and compare onnxruntime with PyTorch (what `export.py --check` runs).

    python bench/export_check.py                                   # D-FINE, DEIM, DEIMv2 N/Atto, RT-DETRv2-r18
    python bench/export_check.py graphs/deim/deim-s.yaml --imgsz 320 320

No trained weights are needed: each graph gets random weights nudged off their initialisation, so
that scores spread and boxes leave their anchors (fresh score heads sit at a 0.01 prior and fresh box
heads are zero, which would leave most of the decoder's box path untested). The file has a dynamic
batch, checked at batch 1 and with all images at once. Takes about a minute per N-size graph on 2 cores."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import export  # noqa: E402
from models import build_model  # noqa: E402
from models.postprocess import PostProcessor  # noqa: E402
from predict import eval_preprocessing  # noqa: E402

DEFAULT_GRAPHS = ["graphs/dfine/dfine-n.yaml", "graphs/deim/deim-n.yaml", "graphs/deimv2/deimv2-atto.yaml",
                  "graphs/deimv2/deimv2-n.yaml", "graphs/rtdetrv2/rtdetrv2-r18.yaml"]


@torch.no_grad()
def nudge_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter (10% of its spread; 0.02 where it is constant) after clearing the
    score heads' prior bias, so detections differ from one query and one image to the next."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "score_head" in name and name.endswith("bias"):
            p.zero_()
        spread = float(p.std()) if p.numel() > 1 else 0.0
        noise = torch.randn(p.shape, generator=generator)
        p.add_(noise * (0.1 * spread if spread > 0 else 0.02))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="*", default=DEFAULT_GRAPHS)
    parser.add_argument("--imgsz", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", nargs="+", help="real images (default: a photo matplotlib ships)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    passed = True
    for path in args.graphs:
        start = time.perf_counter()
        torch.manual_seed(0)
        model = nudge_weights(build_model(path, imgsz=args.imgsz, check=False))
        detector = export.DeployModel(model, PostProcessor(model.nc)).eval()
        preprocessing = eval_preprocessing({}, model.imgsz)
        with tempfile.TemporaryDirectory() as folder:
            onnx_path = export.export_onnx(detector, Path(folder) / "model.onnx", model.imgsz, dynamic_batch=True)
            report = export.check_onnx(detector, onnx_path, export.check_images(args.images, preprocessing))
        passed &= report["passed"]
        print(f"{path} at {model.imgsz[0]}x{model.imgsz[1]} ({time.perf_counter() - start:.0f} s)")
        print(export.format_check(report), flush=True)
    return passed


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
