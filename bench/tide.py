"""TIDE on a generated 5,000-image set: our implementation beside the reference tidecv.

python bench/tide.py [--images 5000] [--skip-reference]"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from core.errors import cli_main  # noqa: E402
from metrics.tide import evaluate  # noqa: E402
from test_tide import make_case, reference_tide  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    gt, results = make_case(0, num_images=args.images)
    print(f"{args.images} images, {len(gt['annotations'])} boxes, {len(results)} detections")
    start = time.perf_counter()
    ours = evaluate(gt, results)
    print(f"detrzoo metrics.tide : {time.perf_counter() - start:6.2f} s  AP50 {ours.ap50:.2f}")
    if not args.skip_reference:
        start = time.perf_counter()
        ap, _, _ = reference_tide(gt, results)
        print(f"tidecv (reference)   : {time.perf_counter() - start:6.2f} s  AP50 {ap:.2f}")


if __name__ == "__main__":
    cli_main(main)
