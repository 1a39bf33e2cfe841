"""Our TIDE against the reference `tidecv` (a test-only oracle), on generated box-only COCO data
with every error type present, sparse category ids and crowd regions."""
import json

import numpy as np
import pytest

from metrics.tide import MAIN_ERRORS, SPECIAL_ERRORS, evaluate, plot

CLASSES = [3, 17, 42]  # sparse ids, as real COCO exports have


def jitter(box, rng, amount):
    x, y, w, h = box
    return [x + rng.uniform(-amount, amount) * w, y + rng.uniform(-amount, amount) * h,
            w * rng.uniform(1 - amount, 1 + amount), h * rng.uniform(1 - amount, 1 + amount)]


def make_case(seed: int, num_images: int = 40, crowd: bool = True):
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(rng.integers(0, 5)):
            w, h = rng.uniform(20, 200), rng.uniform(20, 200)
            box = [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h]
            cls = int(rng.choice(CLASSES))
            is_crowd = crowd and rng.random() < 0.05
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls,
                                "bbox": box, "area": w * h, "iscrowd": int(is_crowd)})
            kind = rng.choice(["tp", "tp", "loc", "cls", "dupe", "both", "miss"])
            other = int(rng.choice([c for c in CLASSES if c != cls]))
            dets = {"tp": [(cls, jitter(box, rng, 0.05))],
                    "loc": [(cls, jitter(box, rng, 0.45))],
                    "cls": [(other, jitter(box, rng, 0.05))],
                    "dupe": [(cls, jitter(box, rng, 0.05)), (cls, jitter(box, rng, 0.08))],
                    "both": [(other, jitter(box, rng, 0.45))],
                    "miss": []}[kind]
            for det_cls, det_box in dets:
                results.append({"image_id": image_id, "category_id": det_cls, "bbox": det_box,
                                "score": float(rng.uniform(0.05, 1.0))})
        for _ in range(rng.integers(0, 3)):  # background detections
            w, h = rng.uniform(10, 60), rng.uniform(10, 60)
            results.append({"image_id": image_id, "category_id": int(rng.choice(CLASSES)),
                            "bbox": [rng.uniform(0, 580), rng.uniform(0, 420), w, h],
                            "score": float(rng.uniform(0.05, 1.0))})
    categories = [{"id": c, "name": f"class{c}"} for c in CLASSES]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def reference_tide(gt, results):
    """tidecv on the same data; its COCO loader needs segmentations, so build its Data directly."""
    tidecv = pytest.importorskip("tidecv")
    from tidecv.data import Data

    truth, preds = Data("gt"), Data("pred")
    for category in gt["categories"]:
        truth.add_class(category["id"], category["name"])
    for image in gt["images"]:
        truth.add_image(image["id"], image["file_name"])
    for ann in gt["annotations"]:
        add = truth.add_ignore_region if ann["iscrowd"] else truth.add_ground_truth
        add(ann["image_id"], ann["category_id"], ann["bbox"])
    for det in results:
        preds.add_detection(det["image_id"], det["category_id"], det["score"], det["bbox"])
    tide = tidecv.TIDE()
    run = tide.evaluate(truth, preds, mode=tidecv.TIDE.BOX)
    errors = tide.get_all_errors()
    return run.ap, errors["main"][preds.name], errors["special"][preds.name]


def assert_equals_tidecv(gt, results):
    ours = evaluate(gt, results)
    ap, main, special = reference_tide(gt, results)
    assert ours.ap50 == pytest.approx(ap, abs=0.01)
    for kind in MAIN_ERRORS:
        assert ours.main[kind] == pytest.approx(main[kind], abs=0.01), kind
    for kind in SPECIAL_ERRORS:
        assert ours.special[kind] == pytest.approx(special[kind], abs=0.01), kind
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tide_equals_tidecv(seed):
    ours = assert_equals_tidecv(*make_case(seed))
    assert all(ours.counts[k] > 0 for k in MAIN_ERRORS), ours.counts  # every error type is exercised


def test_class_without_detections_counts_as_zero_ap_like_tidecv():
    gt, results = make_case(5)
    results = [r for r in results if r["category_id"] != CLASSES[0]]  # this class is never detected
    assert_equals_tidecv(gt, results)


def test_tide_reads_box_only_files_and_plots(tmp_path):
    gt, results = make_case(3, num_images=10, crowd=False)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    result = evaluate(tmp_path / "gt.json", tmp_path / "pred.json")
    plot(result, tmp_path / "tide.png")
    assert (tmp_path / "tide.png").stat().st_size > 10_000


def test_perfect_detections_have_no_errors():
    gt, _ = make_case(4, num_images=5, crowd=False)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    result = evaluate(gt, results)
    assert result.ap50 == pytest.approx(100.0)
    assert all(v == 0 for v in result.main.values()) and all(v == 0 for v in result.special.values())


def test_results_of_another_file_or_labels_instead_of_ids_are_refused_not_scored_as_errors():
    from core.errors import ArgumentError, DataError

    gt, results = make_case(3, num_images=4, crowd=False)
    moved = [{**r, "image_id": r["image_id"] + 1000} for r in results]          # another split's predictions
    with pytest.raises(DataError, match=f"in {len(results)} of {len(results)} detections the image_id is not"):
        evaluate(gt, moved)
    labels = [{**r, "category_id": CLASSES.index(r["category_id"])} for r in results]  # 0-based labels
    with pytest.raises(DataError, match="the category_id is not one of the annotation file's categories: 0, 1, 2"):
        evaluate(gt, labels)
    with pytest.raises(DataError, match="holds no detections"):
        evaluate(gt, [])
    with pytest.raises(ArgumentError, match="0 < bg_thresh <= pos_thresh <= 1"):
        evaluate(gt, results, pos_thresh=2)
    with pytest.raises(ArgumentError, match="max_dets must be 1 or more"):
        evaluate(gt, results, max_dets=0)
    assert evaluate(gt, results, pos_thresh=0.75).summary().startswith("TIDE  bbox AP @ 75:")
