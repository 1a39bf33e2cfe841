"""CPU forward latency of graphs: PyTorch eval form, PyTorch deploy form, onnxruntime fp32 and int8 (batch 1).

    python bench/latency.py                              # the default graphs (see DEFAULT_GRAPHS) at their eval size
    python bench/latency.py graphs/dfine/dfine-m.yaml --imgsz 320 --repeats 20 --threads 1 2
    python bench/latency.py graphs/dfine/dfine-n.yaml --int8   # also the int8 file (calibrated on demo images)
    python bench/latency.py --no-onnx                    # PyTorch columns only (no onnxruntime needed)
    python bench/latency.py graphs/deim/deim-n.yaml --rows   # also each row's share of FLOPs and time

Eval = the trained network in eval mode; deploy = after Detector.deploy() (BN folded,
RepVGG branches merged, decoder cut to its eval layer); onnxrt = the file export.py writes (deploy
network plus post-processor, whose top-k adds well under a millisecond) run by onnxruntime with the
same thread count; int8 = that file after `engine.onnx_export.quantize_int8` (export.py --int8 defaults),
calibrated on generated demo images (latency does not depend on what the ranges are). Each thread
count (`--threads 1 2`) is its own table. The three run in turn within each repeat, so a load change on a shared machine
hits them alike. Median and 90th percentile in ms; GFLOP/s = the deploy model's FLOPs (counted as
`python -m analyze.info` counts them) over the median time, and "% peak" relates that to this
machine's fp32 matmul rate with the same threads, measured in the same run (the better of torch.mm
and onnxruntime's MatMul, best of before and after the graphs). Figures depend on the machine; they are printed, never asserted."""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import cli_main  # noqa: E402
from metrics.flops import count_flops  # noqa: E402
from models import build_model  # noqa: E402
from models.postprocess import PostProcessor  # noqa: E402

DEFAULT_GRAPHS = ["graphs/dfine/dfine-n.yaml", "graphs/dfine/dfine-s.yaml",
                  "graphs/deim/deim-n.yaml", "graphs/deim/deim-s.yaml",
                  "graphs/deimv2/deimv2-atto.yaml", "graphs/deimv2/deimv2-femto.yaml",
                  "graphs/deimv2/deimv2-pico.yaml", "graphs/deimv2/deimv2-n.yaml", "graphs/deimv2/deimv2-s.yaml",
                  "graphs/rtdetrv4/rtdetrv4-s.yaml",
                  "graphs/rtdetrv2/rtdetrv2-r18.yaml", "graphs/deim/deim-rtdetrv2-r18.yaml",
                  "graphs/deformable-detr/deformable-detr-r50.yaml"]


def best_gflops(run, flops: float, seconds: float) -> float:
    run()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        run()
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def matmul_peak_gflops(threads: int, with_onnx: bool, size: int = 1024, seconds: float = 1.0) -> dict[str, float]:
    """Best fp32 GFLOP/s of a square matmul (2 n^3 FLOPs) by torch.mm and by onnxruntime's MatMul:
    the two BLAS libraries differ by up to 2x on one CPU, so the machine's peak is the better one."""
    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    peaks = {"torch": best_gflops(lambda: torch.mm(a, b), 2 * size ** 3, seconds)}
    if with_onnx:
        import onnxruntime
        from onnx import TensorProto, helper

        tensors = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "ABC"]
        graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "matmul", tensors[:2], tensors[2:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"A": a.numpy(), "B": b.numpy()}
        peaks["onnxruntime"] = best_gflops(lambda: session.run(None, feed), 2 * size ** 3, seconds)
    return peaks


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@torch.no_grad()
def interleaved_ms(runners: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """{name: [ms per repeat]}: each repeat runs every runner once, in turn."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def onnx_runners(deployed, imgsz, threads: int, folder: Path, int8: bool = False) -> dict:
    """Export the deploy network plus post-processor; {name: a call of its onnxruntime session} for
    the fp32 file and, with `int8`, its int8 copy."""
    from data.demo import make_demo
    from engine import onnx_export as export
    from engine.onnx_runtime import OnnxDetector

    detector = export.DeployModel(copy.deepcopy(deployed), PostProcessor(deployed.nc))
    paths = {"onnxrt": export.export_onnx(detector, folder / "model.onnx", imgsz)}
    if int8:
        make_demo(folder / "calib", train=8, val=1, imgsz=max(imgsz))
        preprocessing = {"imgsz": list(imgsz), "letterbox": False, "normalize": False}
        paths["int8"] = export.quantize_int8(paths["onnxrt"], folder / "model.int8.onnx", folder / "calib/train",
                                             preprocessing, max_images=8)
    height, width = imgsz
    images, sizes = torch.rand(1, 3, height, width), torch.tensor([[width, height]])
    runners = {}
    for name, path in paths.items():
        # no busy-waiting between runs: the idle pool would take the cores from the PyTorch runs in turn
        session = OnnxDetector(path, threads=threads, spinning=False)
        runners[name] = lambda session=session: session(images, sizes)
    return runners


@torch.no_grad()
def row_times(model, images, repeats: int) -> list[float]:
    """Median ms of each graph row's forward (forward hooks around every row of a Detector)."""
    starts, times = {}, [[] for _ in model.layers]
    handles = []
    for index, layer in enumerate(model.layers):
        handles.append(layer.register_forward_pre_hook(lambda m, a, i=index: starts.__setitem__(i, time.perf_counter())))
        handles.append(layer.register_forward_hook(
            lambda m, a, o, i=index: times[i].append((time.perf_counter() - starts[i]) * 1e3)))
    try:
        for _ in range(repeats + 1):  # the first call warms up
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return [statistics.median(t[1:]) for t in times]


def format_rows(model, profile, ms: list[float]) -> str:
    """Per-row share of the deploy model's FLOPs and of its PyTorch time."""
    flops = [profile.per_module.get(layer, 0.0) for layer in model.layers]
    lines = ["| row | module | GFLOPs | % FLOPs | ms | % time |", "|---|---|---|---|---|---|"]
    for row, row_flops, row_ms in zip(model.rows, flops, ms):
        lines.append(f"| {row.index} | {row.module} | {row_flops / 1e9:.2f} | {100 * row_flops / sum(flops):.0f}% "
                     f"| {row_ms:.1f} | {100 * row_ms / sum(ms):.0f}% |")
    return "\n".join(lines)


def measure(path: str, imgsz, threads: int, repeats: int, warmup: int, with_onnx: bool, rows: bool = False,
            int8: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model(path, imgsz=imgsz, check=False).eval()
    height, width = model.imgsz
    images = torch.rand(1, 3, height, width)
    deployed = copy.deepcopy(model).deploy()
    profile = count_flops(deployed, images)
    runners = {"eval": lambda: model(images), "deploy": lambda: deployed(images)}
    with tempfile.TemporaryDirectory() as folder:
        if with_onnx:
            runners.update(onnx_runners(deployed, [height, width], threads, Path(folder), int8))
        torch.set_num_threads(threads)
        times = interleaved_ms(runners, repeats, warmup)
    result = {"graph": path, "imgsz": [height, width], "gflops": profile.gflops, "threads": threads,
              **{f"{name}_ms": statistics.median(t) for name, t in times.items()},
              **{f"{name}_p90_ms": percentile(t, 0.9) for name, t in times.items()}}
    if rows:
        result["rows"] = format_rows(deployed, profile, row_times(deployed, images, repeats))
    return result


def format_row(row: dict, peak: float, names) -> str:
    """One Markdown table row: times as median / p90, rates as GFLOP/s (% of the matmul peak)."""
    cells = [row["graph"], f"{row['imgsz'][0]}x{row['imgsz'][1]}", f"{row['gflops']:.2f}"]
    cells += [f"{row[f'{name}_ms']:.1f} / {row[f'{name}_p90_ms']:.1f}" for name in names]
    cells.append(f"{row['eval_ms'] / row['deploy_ms']:.2f}x")
    for name in names[1:]:
        rate = row["gflops"] / row[f"{name}_ms"] * 1e3
        cells.append(f"{rate:.1f} ({100 * rate / peak:.0f}%)")
    return "| " + " | ".join(cells) + " |"


def header(names) -> str:
    cells = ["graph", "size", "GFLOPs", *(f"{name} ms" for name in names), "speed-up",
             *(f"{name} GFLOP/s (% peak)" for name in names[1:])]
    return "| " + " | ".join(cells) + " |\n|" + "---|" * len(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="*", default=DEFAULT_GRAPHS)
    parser.add_argument("--imgsz", type=int, help="square input size (default: each graph's eval size)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="one table per thread count")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime columns")
    parser.add_argument("--int8", action="store_true", help="also time the int8 file (onnxruntime static quantization)")
    parser.add_argument("--rows", action="store_true", help="also print each row's share of FLOPs and of deploy time")
    args = parser.parse_args(argv)
    with_onnx = not args.no_onnx
    if with_onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print('onnxruntime is not installed (pip install -e ".[export]"): timing PyTorch only')
            with_onnx = False
    tables = []
    for threads in args.threads:
        tables.append(run_table(args, threads, with_onnx))
    return tables


def run_table(args, threads: int, with_onnx: bool):
    load_before = os.getloadavg()[0]
    peaks_before = matmul_peak_gflops(threads, with_onnx)
    rows = []
    for path in args.graphs:  # the table waits for the closing peak measurement; progress goes to stderr
        rows.append(measure(path, args.imgsz, threads, args.repeats, args.warmup, with_onnx, args.rows,
                            args.int8 and with_onnx))
        print(f"{path}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items() if k.endswith("_ms")),
              file=sys.stderr, flush=True)
    peaks = {name: max(rate, peaks_before[name]) for name, rate in matmul_peak_gflops(threads, with_onnx).items()}
    peak = max(peaks.values())
    # the load average says how much other work shared the cores (2-thread runs suffer most from it)
    print(f"CPU, {threads} thread{'s' if threads > 1 else ''}, batch 1, median and p90 of {args.repeats} (ms); "
          f"fp32 matmul peak {peak:.1f} GFLOP/s ({', '.join(f'{name} {rate:.1f}' for name, rate in peaks.items())}; "
          f"best of before and after); load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    names = ("eval", "deploy", "onnxrt") if with_onnx else ("eval", "deploy")
    if with_onnx and args.int8:
        names += ("int8",)
    print(header(names))
    for row in rows:
        print(format_row(row, peak, names))
    for row in rows:
        if "rows" in row:
            print(f"\n{row['graph']}: where the deploy model's FLOPs and PyTorch time go\n{row['rows']}")
    print()
    return rows, peak

if __name__ == "__main__":
    cli_main(main)
