"""Export official-size graphs and compare onnxruntime with PyTorch (what `export.py --check` runs).

    python bench/export_check.py                                   # D-FINE, DEIM, DEIMv2 N/Atto, RT-DETRv2-r18
    python bench/export_check.py graphs/deim/deim-s.yaml --imgsz 320 320

No trained weights are needed: each graph gets random weights nudged off their initialisation, so
that scores spread and boxes leave their anchors (fresh score heads sit at a 0.01 prior and fresh box
heads are zero, which would leave most of the decoder's box path untested). Nudged random weights
still give near-equal scores to many queries, so besides the top-k check of the exported file
(dynamic batch: batch 1 and all images at once) the network alone is exported and compared on every
query and class, where no ranking is involved. Seconds per N-size graph on 2 idle cores."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import onnx_export as export  # noqa: E402
from models import build_model  # noqa: E402
from models.postprocess import PostProcessor  # noqa: E402
from data.pipeline import eval_preprocessing  # noqa: E402

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


class NetworkOutputs(torch.nn.Module):
    """The deploy network alone: every query's class probabilities and box, before any top-k."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, orig_target_sizes: torch.Tensor):
        out = self.model(images)
        return out["pred_logits"].sigmoid(), out["pred_boxes"]


def compare_all_queries(model, images: list, folder: Path) -> tuple[float, float, int]:
    """Every query, every class, all images: each PyTorch query is paired with the onnxruntime query
    of the nearest box (near-equal encoder scores may order the selected queries differently).
    Returns the largest probability and box difference (pixels) over the pairs, and how many
    PyTorch queries have no counterpart within 1e-3 (a different query set, not just an order)."""
    import onnxruntime

    network = NetworkOutputs(model).eval()
    height, width = images[0][1].shape[1:]
    path = export.export_onnx(network, folder / "network.onnx", [height, width], output_names=("probs", "boxes"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}  # the tracer drops the unused size input
    scale = torch.tensor([width, height, width, height])
    worst_prob = worst_box = 0.0
    unpaired = 0
    for _, tensor in images:
        feed = {"images": tensor[None].numpy(), "orig_target_sizes": torch.tensor([[width, height]]).numpy()}
        probs, boxes = (torch.from_numpy(out)[0] for out in session.run(None, {k: v for k, v in feed.items() if k in inputs}))
        with torch.no_grad():
            ref_probs, ref_boxes = (out[0] for out in network(tensor[None], None))
        box_distance = torch.cdist(ref_boxes * scale, boxes * scale, p=float("inf"))    # [Q, Q] pixels
        prob_distance = torch.cdist(ref_probs, probs, p=float("inf"))                     # [Q, Q]
        nearest = (box_distance + prob_distance).argmin(1)
        pair_box = box_distance.gather(1, nearest[:, None]).squeeze(1)
        pair_prob = prob_distance.gather(1, nearest[:, None]).squeeze(1)
        unpaired += int(((pair_box > 1e-3) | (pair_prob > 1e-3)).sum())
        worst_prob, worst_box = max(worst_prob, float(pair_prob.max())), max(worst_box, float(pair_box.max()))
    return worst_prob, worst_box, unpaired


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
            images = export.check_images(args.images, preprocessing)
            report = export.check_onnx(detector, onnx_path, images)
            prob_diff, box_diff, unpaired = compare_all_queries(detector.model, images, Path(folder))
        all_ok = unpaired == 0
        passed &= report["passed"] and all_ok
        print(f"{path} at {model.imgsz[0]}x{model.imgsz[1]} ({time.perf_counter() - start:.0f} s)")
        print(export.format_check(report))
        print(f"every query and class, network outputs paired by nearest box: max |d prob| {prob_diff:.2e}, "
              f"max |d box| {box_diff:.2e} px, {unpaired} unpaired  {'ok' if all_ok else 'MISMATCH'}", flush=True)
    return passed


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
