"""CPU forward latency of each registered block alone, batch 1, eval form and deploy form (after fuse()).

    python bench/block_latency.py                                  # every block, 1 thread
    python bench/block_latency.py --category mamba --repeats 20
    python bench/block_latency.py --names ADown LAWDS --markdown
    python bench/block_latency.py --json block_latency.json        # also write the figures as JSON

Each block is built from its registered example arguments and timed at a typical neck shape, the first
of these that builds and runs:
  - one input map: (1, 128, 40, 40), stride 16 of a 640 input at the 128-channel width of the DEIM-N
    encoder (an "arg0" block also gets 128 output channels); then (1, C, 40, 40) with C the example's
    channels; then the example's shape at batch 1;
  - a block that reads the image (3 input channels: stems, whole backbones): (1, 3, 640, 640);
  - several input maps: the example's shapes at batch 1, scaled so that the largest map is 40x40
    (ratios kept); then the example's shapes at batch 1.
`--channels 0` skips the 128-channel try (the example's channels at 40x40 first). The "timed at" column
says what was used and the note why a fallback was taken. Warm-up runs, then the median (and p90) of
`--repeats` runs in ms; the eval and deploy forms run in turn within each repeat, so a load change on a
shared machine hits them alike. Params are the train form's; GFLOPs the deploy form's at that shape,
counted as `python -m analyze.flops` counts them. Figures depend on the machine; they are printed,
never asserted."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import cli_main  # noqa: E402
from analyze.flops import build_block  # noqa: E402
from bench.latency import interleaved_ms, percentile  # noqa: E402
from blocks.registry import blocks, get  # noqa: E402
from metrics.flops import count_flops, count_params, deployed_copy  # noqa: E402

NECK_SIZE = 40          # stride 16 of a 640x640 input
IMAGE_SIZE = 640


def shape_text(shapes) -> str:
    return ", ".join("x".join(str(v) for v in shape) for shape in shapes)


def _with_out_channels(spec, channels: int):
    """The example's arguments with the output channels (rule "arg0") set to `channels`, as [args, kwargs]."""
    positional, keywords = list(spec.example.get("args", [])), dict(spec.example.get("kwargs", {}))
    if positional:
        positional[0] = channels
    else:
        keywords[spec.out_param] = channels
    return [positional, keywords]


def candidates(spec, channels: int = 128, size: int = NECK_SIZE) -> list[tuple[list, object, str]]:
    """(input shapes, args or None for the example's, note) to try in turn; see the module docstring."""
    example = spec.example
    if spec.multi_input:
        shapes = [tuple(s) for s in example["shapes"]] if "shapes" in example else [tuple(example["shape"])] * 2
        factor = size / max(max(s[2:]) for s in shapes)
        scaled = [(1, s[1], max(1, round(s[2] * factor)), max(1, round(s[3] * factor))) for s in shapes]
        tries = [(scaled, None, ""), ([(1, *s[1:]) for s in shapes], None, "example shapes")]
    else:
        _, c, h, w = example.get("shape", (1, 64, 32, 32))
        if c == 3:
            tries = [([(1, 3, IMAGE_SIZE, IMAGE_SIZE)], None, "image input")]
        else:
            tries = []
            if channels:
                args = _with_out_channels(spec, channels) if spec.channels == "arg0" else None
                tries.append(([(1, channels, size, size)], args, ""))
            tries.append(([(1, c, size, size)], None, "example channels"))
        tries.append(([(1, c, h, w)], None, "example shape"))
    unique = []
    for shapes, args, note in tries:
        if all((shapes, args) != (s, a) for s, a, _ in unique):
            unique.append((shapes, args, note))
    return unique


def _output_shape(out):
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [_output_shape(o) for o in out]
    return type(out).__name__


def measure(name: str, repeats: int = 10, warmup: int = 2, channels: int = 128) -> dict:
    """Time block `name` at the first candidate shape that builds and runs (see the module docstring)."""
    spec = get(name)
    reasons = []
    for shapes, args, note in candidates(spec, channels):
        torch.manual_seed(0)
        try:
            module, x, shapes = build_block(name, shapes, args)
            deployed = deployed_copy(module)
            with torch.no_grad():
                out = deployed(x)
                module(x)
        except Exception as err:  # noqa: BLE001 (a shape the block does not take: try the next one)
            reasons.append(f"{shape_text(shapes)}: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
            continue
        profile = count_flops(deployed, x)
        times = interleaved_ms({"eval": lambda: module(x), "deploy": lambda: deployed(x)}, repeats, warmup)
        if reasons:
            note = f"{note} ({reasons[0]})"
        return {"block": name, "category": spec.category, "timed_at": shape_text(shapes),
                "input": [list(s) for s in shapes], "output": _output_shape(out), "note": note,
                "params": count_params(module), "gflops": profile.flops / 1e9,
                "eval_ms": statistics.median(times["eval"]), "deploy_ms": statistics.median(times["deploy"]),
                "deploy_p90_ms": percentile(times["deploy"], 0.9)}
    raise RuntimeError(f"{name} runs at none of its timing shapes: " + "; ".join(reasons))


def machine(load_before: float) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # before and after: other work on the cores


COLUMNS = ("block", "category", "timed at", "params", "GFLOPs", "eval ms", "deploy ms", "deploy p90", "note")


def cells(row: dict) -> list[str]:
    return [row["block"], row["category"], row["timed_at"], f"{row['params']:,}", f"{row['gflops']:.3f}",
            f"{row['eval_ms']:.2f}", f"{row['deploy_ms']:.2f}", f"{row['deploy_p90_ms']:.2f}", row["note"]]


def format_table(rows: list[dict], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
        return "\n".join(lines)
    table = [list(COLUMNS)] + [cells(row) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(wd) if i < 3 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
                     + "  " + r[-1] for r in table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", help="only the blocks of this category")
    parser.add_argument("--names", nargs="+", help="only these blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels", type=int, default=128, help="channels of the first single-input try (0: the example's)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or [spec.name for spec in blocks(args.category)]
    load_before = os.getloadavg()[0]
    rows, failures = [], []
    for name in names:  # progress goes to stderr, the table to stdout at the end
        try:
            rows.append(measure(name, args.repeats, args.warmup, args.channels))
            print(f"{name}: {rows[-1]['timed_at']}, deploy {rows[-1]['deploy_ms']:.2f} ms", file=sys.stderr, flush=True)
        except Exception as err:  # noqa: BLE001 (report every failing block and go on)
            failures.append({"block": name, "error": f"{type(err).__name__}: {err}"})
            print(f"{name}: FAILED {failures[-1]['error']}", file=sys.stderr, flush=True)
    info = machine(load_before)
    print(f"CPU ({info['cpu']}, {info['cores']} cores), {args.threads} thread(s), torch {info['torch']}, batch 1, "
          f"median of {args.repeats} after {args.warmup} warm-up runs (ms); load average {info['load_average'][0]} before, "
          f"{info['load_average'][1]} after")
    print(format_table(rows, args.markdown))
    for failure in failures:
        print(f"{failure['block']}: FAILED {failure['error']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "repeats": args.repeats, "warmup": args.warmup,
                                               "blocks": rows, "failures": failures}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    cli_main(main)
