"""Evaluator numbers against hand-computed values on a two-image, two-class case."""
import pytest
import torch
from pycocotools.coco import COCO

from metrics.detection import confusion_matrix
from metrics.coco_eval import CocoEvaluator

# category ids 5 and 9 (not contiguous, like real exports); labels 0 and 1
GT = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
      "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
      "annotations": [
          {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
          {"id": 2, "image_id": 1, "category_id": 9, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
          {"id": 3, "image_id": 2, "category_id": 5, "bbox": [20, 20, 40, 40], "area": 1600, "iscrowd": 0},
          {"id": 4, "image_id": 2, "category_id": 9, "bbox": [60, 10, 20, 20], "area": 400, "iscrowd": 0}]}


def xyxy(x, y, w, h):
    return [x, y, x + w, y + h]


@pytest.fixture
def evaluator():
    coco = COCO()
    coco.dataset = GT
    coco.createIndex()
    ev = CocoEvaluator(coco, category_ids=[5, 9], names=["cat", "dog"])
    ev.update({
        1: {"labels": torch.tensor([0, 1]), "scores": torch.tensor([0.95, 0.9]),
            "boxes": torch.tensor([xyxy(10, 10, 30, 30), xyxy(50, 50, 20, 20)], dtype=torch.float)},
        2: {"labels": torch.tensor([0, 1]), "scores": torch.tensor([0.95, 0.8]),      # the dog box is wrong
            "boxes": torch.tensor([xyxy(20, 20, 40, 40), xyxy(5, 70, 20, 20)], dtype=torch.float)}})
    return ev


def test_coco_ap_per_class_and_yolo_metrics_match_hand_values(evaluator):
    result = evaluator.evaluate(verbose=False)
    # dog: precision 1 up to recall 0.5 at every IoU -> 51 of COCO's 101 recall points; cat: perfect
    dog_ap = 51 / 101
    assert result["stats"][0] == pytest.approx((1 + dog_ap) / 2)
    assert result["stats"][1] == pytest.approx((1 + dog_ap) / 2)
    rows = {r["class"]: r for r in result["per_class"]}
    assert rows["cat"]["AP"] == pytest.approx(1.0) and rows["dog"]["AP50"] == pytest.approx(dog_ap)
    assert rows["dog"]["category_id"] == 9 and rows["dog"]["instances"] == 2
    assert rows["dog"]["APl"] != rows["dog"]["APl"]                         # no large dogs: NaN, shown as '-'
    yolo = result["yolo"]
    # envelope area: dog 0.5 * 1 + 0.5 * 0.25 (linear fall to 0 at recall 1); cat 1
    assert yolo["mAP50"] == pytest.approx((1 + 0.625) / 2, abs=0.01)
    # best mean F1 at a confidence just under 0.9: cat P=R=1, dog P=1 R=0.5
    assert yolo["precision"] == pytest.approx(1.0, abs=0.01)
    assert yolo["recall"] == pytest.approx(0.75, abs=0.01)
    assert yolo["f1"] == pytest.approx((1 + 2 / 3) / 2, abs=0.01)


def test_predictions_use_dataset_category_ids_and_xywh(evaluator):
    first = evaluator.detections[1]
    assert first == {"image_id": 1, "category_id": 9, "bbox": [50.0, 50.0, 20.0, 20.0], "score": 0.9}


def test_confusion_matrix_counts_background_rows_and_columns(evaluator):
    matrix = confusion_matrix(evaluator.coco, evaluator.detections, [5, 9])
    # rows: predicted cat, dog, background; columns: true cat, dog, background
    assert matrix.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 0]]
