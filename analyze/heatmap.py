"""`python -m analyze.heatmap -c CFG -r CKPT -i IMAGE_OR_DIR --layers IDX [IDX ...]
   [--method gradcam|gradcam++|xgradcam|eigencam|layercam] [--target class|box|all] [--conf 0.25] [-o DIR]`

Class-activation heatmaps of a DETR graph, computed with the `grad-cam` library. The target is the
image's confident detections (score >= --conf, at most --max-dets; the single best one if none
passes): `class` sums their class scores, `box` sums the IoU of their predicted boxes with the
detected boxes (held fixed), `all` both. One heatmap per image and layer, blended on the network's
input image with the detections drawn."""
import argparse

import numpy as np
import torch
from torch import nn

from core.box_ops import box_cxcywh_to_xyxy, box_iou
from core.errors import ConfigError, cli_main

METHODS = ("gradcam", "gradcam++", "xgradcam", "eigencam", "layercam")
TARGETS = ("class", "box", "all")


def cam_class(method: str):
    import pytorch_grad_cam as cams

    return {"gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "xgradcam": cams.XGradCAM,
            "eigencam": cams.EigenCAM, "layercam": cams.LayerCAM}[method]


class DetectionOutputs(nn.Module):
    """The detector with its outputs packed as one tensor [B, Q, C + 4] (logits, then cxcywh boxes),
    which is the form grad-cam hands to a target, one image at a time."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, images):
        out = self.detector(images)
        return torch.cat([out["pred_logits"], out["pred_boxes"]], dim=-1)


class DetectionTarget:
    """Score of one image's chosen detections: class scores, box agreement, or both."""

    def __init__(self, queries: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, kind: str):
        self.queries, self.labels, self.boxes, self.kind = queries, labels, boxes, kind

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        logits, boxes = output[:, :-4], output[:, -4:]
        total = output.new_zeros(())
        if self.kind in ("class", "all"):
            total = total + logits[self.queries, self.labels].sigmoid().sum()
        if self.kind in ("box", "all"):
            iou, _ = box_iou(box_cxcywh_to_xyxy(boxes[self.queries]), box_cxcywh_to_xyxy(self.boxes))
            total = total + iou.diagonal().sum()
        return total


def choose_detections(packed: torch.Tensor, conf: float, max_dets: int):
    """Queries whose best class score passes `conf` (at most `max_dets`; else the best one)."""
    logits, boxes = packed[:, :-4], packed[:, -4:]
    scores, labels = logits.sigmoid().max(-1)
    order = scores.argsort(descending=True)
    keep = order[scores[order] >= conf][:max_dets]
    if len(keep) == 0:
        keep = order[:1]
    return keep, labels[keep], boxes[keep].detach(), scores[keep]


def heatmap(detector, image: torch.Tensor, layer: int, method: str = "gradcam", target: str = "all",
            conf: float = 0.25, max_dets: int = 10):
    """(cam [H, W] in [0, 1], detections) for one preprocessed image [3, H, W] and one graph row."""
    if not 0 <= layer < len(detector.rows):
        raise ConfigError(f"layer {layer} does not exist; the graph has rows 0..{len(detector.rows) - 1}",
                          where="--layers")
    packed_model = DetectionOutputs(detector).eval()
    with torch.no_grad():
        packed = packed_model(image[None])[0]
    queries, labels, boxes, scores = choose_detections(packed, conf, max_dets)
    targets = [DetectionTarget(queries, labels, boxes, target)]
    with cam_class(method)(model=packed_model, target_layers=[detector.layers[layer]]) as cam:
        try:
            grayscale = cam(input_tensor=image[None], targets=targets)[0]
        except (AttributeError, ValueError, IndexError) as err:
            raise ConfigError(f"row {layer} ({detector.rows[layer].module}) cannot be used for a heatmap: {err}",
                              where="--layers", hint="choose a row that outputs one feature map (not a list)") from None
    return grayscale, {"labels": labels, "boxes": boxes, "scores": scores}


def render(image: torch.Tensor, grayscale: np.ndarray, detections: dict, names: list[str]):
    """The heatmap blended on the image, with the detections drawn (a PIL image)."""
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from core.drawing import draw_detections

    rgb = image.permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float32)
    blended = Image.fromarray(show_cam_on_image(rgb, grayscale, use_rgb=True))
    height, width = rgb.shape[:2]
    xyxy = box_cxcywh_to_xyxy(detections["boxes"]) * torch.tensor([width, height, width, height])
    shown = [{"label": int(label), "class": names[label] if label < len(names) else str(int(label)),
              "score": float(score), "box": box.tolist()}
             for label, score, box in zip(detections["labels"], detections["scores"], xyxy)]
    return draw_detections(blended, shown)


def main(argv=None):
    from analyze import _detector_cli

    parser = argparse.ArgumentParser(prog="python -m analyze.heatmap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _detector_cli.add_arguments(parser, "outputs/heatmaps")
    parser.add_argument("--method", choices=METHODS, default="gradcam")
    parser.add_argument("--target", choices=TARGETS, default="all")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--max-dets", type=int, default=10)
    args = parser.parse_args(argv)
    if not 0 <= args.conf <= 1 or args.max_dets < 1:
        parser.error(f"--conf must be in [0, 1] and --max-dets at least 1, got {args.conf} and {args.max_dets}")
    model, meta, out_dir, inputs = _detector_cli.open_detector(args)
    names = list(meta.get("names") or [])
    for path, stem, tensor in inputs:
        for layer in args.layers:
            grayscale, detections = heatmap(model, tensor, layer, args.method, args.target, args.conf, args.max_dets)
            target = out_dir / f"{stem}_row{layer}_{args.method}_{args.target}.png"
            render(tensor.cpu(), grayscale, detections, names).save(target)
            print("wrote", target)


if __name__ == "__main__":
    cli_main(main)
