"""Issue #5: the smallest DEIM-style graph, trained with our criterion, memorises two synthetic images.

Two 128 px scenes with two coloured rectangles each (colour = class); 200 AdamW steps on CPU with
the DEIM recipe's loss (MAL + L1/GIoU + FGL/DDF, denoising on); then COCO AP50 (pycocotools) on
the same images must exceed 0.9.
"""
import contextlib
import io
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models import build_model
from models.criterion import build_criterion
from models.postprocess import PostProcessor

GRAPH = Path(__file__).resolve().parents[1] / "graphs" / "examples" / "tiny_deim.yaml"
SIZE = 128
COLOURS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]])
SCENES = [[(0, (10, 12, 50, 60)), (2, (70, 64, 120, 110))],
          [(1, (30, 20, 100, 70)), (0, (16, 84, 48, 120))]]  # (class, (x0, y0, x1, y1) px)
CRITERION = {"type": "DEIMCriterion", "losses": ["mal", "boxes", "local"], "alpha": 0.75, "gamma": 1.5,
             "weight_dict": {"loss_mal": 1, "loss_bbox": 5, "loss_giou": 2, "loss_fgl": 0.15, "loss_ddf": 1.5},
             "reg_max": 16, "num_classes": 3,  # reg_max as in the graph's decoder
             "matcher": {"type": "HungarianMatcher", "weight_dict": {"cost_class": 2, "cost_bbox": 5, "cost_giou": 2},
                         "alpha": 0.25, "gamma": 2.0}}


def render(objects):
    image = torch.full((3, SIZE, SIZE), 0.5)
    boxes = []
    for label, (x0, y0, x1, y1) in objects:
        image[:, y0:y1, x0:x1] = COLOURS[label][:, None, None]
        boxes.append([(x0 + x1) / 2 / SIZE, (y0 + y1) / 2 / SIZE, (x1 - x0) / SIZE, (y1 - y0) / SIZE])
    return image, {"labels": torch.tensor([label for label, _ in objects]), "boxes": torch.tensor(boxes)}


def coco_ap50(detections) -> float:
    gt = COCO()  # annotation ids start at 1: COCOeval reads a matched id 0 as "unmatched"
    gt.dataset = {"images": [{"id": i, "width": SIZE, "height": SIZE} for i in range(len(SCENES))],
                  "categories": [{"id": c} for c in range(len(COLOURS))],
                  "annotations": [{"id": 1 + len(SCENES) * i + k, "image_id": i, "category_id": label, "iscrowd": 0,
                                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
                                  for i, scene in enumerate(SCENES) for k, (label, (x0, y0, x1, y1)) in enumerate(scene)]}
    results = [{"image_id": i, "category_id": int(label), "score": float(score),
                "bbox": [x0, y0, x1 - x0, y1 - y0]}
               for i, d in enumerate(detections)
               for label, score, (x0, y0, x1, y1) in zip(d["labels"], d["scores"], d["boxes"].tolist())]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])


@pytest.mark.slow
def test_tiny_deim_overfits_two_images():
    torch.manual_seed(0)
    images, targets = zip(*(render(scene) for scene in SCENES))
    images, targets = torch.stack(images), list(targets)
    model = build_model(GRAPH)
    criterion = build_criterion(CRITERION)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    model.train()
    first = None
    for _ in range(200):
        loss = sum(criterion(model(images, targets), targets).values())
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
    assert loss.item() < 0.6 * first

    model.eval()
    with torch.no_grad():
        detections = PostProcessor(num_classes=3, num_top_queries=20)(model(images), torch.tensor([[SIZE, SIZE]] * 2))
    assert coco_ap50(detections) > 0.9
