"""`python -m analyze.flops BLOCK [--shape 1,C,H,W | --shapes S1 S2 ...] [--args YAML] [--json]`
`python -m analyze.flops --all [--category C]`

Builds a registered block from its declared example (or the given args and input shapes) and prints
params, GFLOPs, output shape and CPU forward time. FLOPs are counted exactly as `analyze.info` counts
them inside a graph, so a block's figure here equals its row's figure there."""
import argparse
import inspect
import json
import statistics
import time

import torch
import yaml

from metrics.flops import count_flops, count_params
from blocks.registry import blocks, get
from core.errors import DetrZooError, cli_main


def _parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise DetrZooError(f"shape {text!r} is not a comma-separated list of ints", hint="write e.g. 1,64,40,40") from None
    if len(shape) != 4:
        raise DetrZooError(f"shape {text!r} must have 4 dimensions (B,C,H,W)")
    return shape


def build_block(name: str, shapes=None, args=None):
    """`name` in eval mode, built from its declared example (or `args`: a list, a dict or [list, dict])
    for inputs of `shapes`, and a random input of those shapes (a list of maps for a multi-input
    block): `(module, x, shapes)`."""
    spec = get(name)
    example = spec.example
    shapes = shapes or example.get("shapes") or [example.get("shape", (1, 64, 32, 32))]
    multi = len(shapes) > 1 or "shapes" in example
    inputs = [torch.randn(*s) for s in shapes]
    c_in = [t.shape[1] for t in inputs] if multi else inputs[0].shape[1]
    if args is None:
        positional, keywords = list(example.get("args", [])), dict(example.get("kwargs", {}))
    elif isinstance(args, dict):
        positional, keywords = [], args
    elif len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], dict):  # [list, dict], as in a graph row
        positional, keywords = list(args[0]), dict(args[1])
    else:
        positional, keywords = list(args), {}
    try:
        module = spec.cls(c_in, *positional, **keywords) if spec.takes_c_in else spec.cls(*positional, **keywords)
    except TypeError as err:
        accepted = [p for p in inspect.signature(spec.cls).parameters if p != spec.c_in_param]
        raise DetrZooError(f"{name} could not be built: {err}", hint=f"{name} takes ({', '.join(accepted)})") from None
    return module.eval(), (inputs if multi else inputs[0]), shapes


def block_figures(name: str, shapes=None, args=None, repeats: int = 5) -> dict:
    """Build `name`, run it once under the counter and time `repeats` forwards."""
    module, x, shapes = build_block(name, shapes, args)
    spec = get(name)
    profile = count_flops(module, x)
    times = []
    with torch.no_grad():
        module(x)  # warm-up: first calls pay for allocation and kernel selection
        for _ in range(repeats):
            start = time.perf_counter()
            out = module(x)
            times.append(time.perf_counter() - start)
    out_shape = ([list(t.shape) for t in out] if isinstance(out, (list, tuple)) else
                 list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__)
    return {"block": name, "category": spec.category, "input": [list(s) for s in shapes], "output": out_shape,
            "params": count_params(module), "gflops": profile.flops / 1e9, "flops": int(profile.flops),
            "cpu_ms": statistics.median(times) * 1e3}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.flops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("block", nargs="?")
    parser.add_argument("--all", action="store_true", help="every registered block at its example shape")
    parser.add_argument("--category")
    parser.add_argument("--shape", type=_parse_shape, help="B,C,H,W of the input")
    parser.add_argument("--shapes", type=_parse_shape, nargs="+", help="shapes of a multi-input block")
    parser.add_argument("--args", type=yaml.safe_load, help="YAML list, dict or [list, dict] of the block's arguments")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--debug", action="store_true")
    options = parser.parse_args(argv)
    if not options.all and not options.block:
        parser.error("name a block or pass --all")
    torch.set_num_threads(min(2, torch.get_num_threads()))

    names = [s.name for s in blocks(options.category)] if options.all else [options.block]
    shapes = options.shapes or ([options.shape] if options.shape else None)
    rows, failures = [], []
    for name in names:
        try:
            rows.append(block_figures(name, shapes, options.args, options.repeats))
        except Exception as err:  # noqa: BLE001 (--all reports every failing block and goes on)
            if not options.all:
                raise
            failures.append((name, f"{type(err).__name__}: {err}"))
    if options.json:
        print(json.dumps({"blocks": rows, "failures": failures}, indent=1))
    else:
        print(f"{'block':<28}{'category':<12}{'params':>12}{'GFLOPs':>11}{'CPU ms':>9}  input -> output")
        for r in rows:
            print(f"{r['block']:<28}{r['category']:<12}{r['params']:>12,}{r['gflops']:>11.4f}{r['cpu_ms']:>9.2f}"
                  f"  {r['input']} -> {r['output']}")
        for name, error in failures:
            print(f"{name:<28}FAILED: {error}")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    cli_main(main)
