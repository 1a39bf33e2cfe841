"""`python -m analyze.ablate GRAPH [GRAPH ...] --recipe RECIPE [--epochs N] [--seeds 0 1 2] [-u k=v ...] -o DIR`

Trains every graph variant with the same recipe and seeds, evaluates each, and writes the table a
paper's ablation section needs: `ablation.md` and `ablation.csv` (params, GFLOPs, CPU latency, AP,
AP50, AP75, APs/m/l as mean ± std over seeds) and `ablation.png` (AP against GFLOPs).

Resumable: each finished (variant, seed) leaves `DIR/<variant>/seed<k>.json` and is not rerun; an
interrupted one continues from its own `last.pth`.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
from pathlib import Path

import torch

from core.drawing import plot_fonts
from core.errors import ConfigError, cli_main

METRICS = ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")


def variant_name(graph: str) -> str:
    return Path(graph).stem


def _write_json_atomic(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def run_settings(graph: str, recipe: str, epochs: int | None, updates: list[str]) -> dict:
    """What a (variant, seed) result depends on besides the seed: the composed run config (recipe, its
    includes, the overrides, the epochs) and the graph file's bytes, as digests."""
    from engine.config import load_config

    cfg = load_config(recipe, run_overrides(graph, epochs, updates))
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
    return {"config_sha256": digest, "graph_sha256": hashlib.sha256(Path(graph).read_bytes()).hexdigest()}


def run_overrides(graph: str, epochs: int | None, updates: list[str]) -> list[str]:
    return [*updates, f"graph={graph}"] + ([f"epochs={epochs}"] if epochs is not None else [])


def run_variant(graph: str, recipe: str, seed: int, out_dir: Path, epochs: int | None, updates: list[str],
                device: str | None) -> dict:
    """Train one (graph, seed) to the end and return its final evaluation (cached in seed<k>.json, reused
    only while the recipe, overrides, epochs and graph are those it was made with)."""
    from engine.config import load_config
    from engine.solver import Solver

    result_file = out_dir / variant_name(graph) / f"seed{seed}.json"
    settings = run_settings(graph, recipe, epochs, updates)
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        if result.get("settings") != settings:
            raise ConfigError(f"{result_file} was made with another recipe, overrides, epochs or graph file",
                              where=str(result_file),
                              hint="write this ablation to another -o folder, or delete the variant's folder to "
                                   "retrain it")
        return result
    run_dir = out_dir / variant_name(graph) / f"seed{seed}"
    solver = Solver(load_config(recipe, run_overrides(graph, epochs, updates)), seed=seed, output_dir=str(run_dir),
                    auto_resume=True, device=device)
    stats = solver.fit()
    if "stats" not in stats:  # auto-resume found the run finished: its result file was deleted
        raise ConfigError(f"{run_dir} finished before, but its result file {result_file.name} is gone",
                          where=str(run_dir), hint=f"delete {run_dir} to retrain this seed")
    result = {"graph": graph, "seed": seed, "settings": settings,
              **dict(zip(METRICS, stats["stats"][: len(METRICS)]))}
    result_file.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(result_file, result)
    return result


def model_figures(graph: str, recipe: str, updates: list[str], timed: bool = True) -> dict:
    """Params, deploy GFLOPs and CPU latency (batch 1, deploy form) at the recipe's input size (without
    `timed`: the variant is only built and counted, which checks its graph)."""
    from engine.config import load_config
    from metrics.coco_eval import measure_speed, model_stats
    from metrics.flops import deployed_copy
    from models.factory import build_detector

    cfg = load_config(recipe, [*updates, f"graph={graph}"])
    model, _, postprocessor = build_detector(cfg, with_criterion=False)
    figures = model_stats(model, model.imgsz)
    if not timed:
        return {"params": figures["params"], "gflops": figures["gflops"]}
    speed = measure_speed(deployed_copy(model), postprocessor.eval(), model.imgsz, torch.device("cpu"), runs=10)
    return {"params": figures["params"], "gflops": figures["gflops"], "latency_ms": speed["forward_ms"],
            "imgsz": list(model.imgsz)}


def summarise(results: list[dict]) -> dict:
    """mean and std (over seeds) of every metric, in percent; None where COCO gave -1 (no objects of
    that size in the validation set), which no mean of -100s should stand in for."""
    summary = {}
    for metric in METRICS:
        values = [100 * r[metric] for r in results]
        summary[metric] = None if any(v < 0 for v in values) else (
            statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return summary


def write_reports(rows: list[dict], out_dir: Path, seeds: list[int]) -> None:
    header = ["variant", "params (M)", "GFLOPs", "CPU ms", *METRICS]
    with open(out_dir / "ablation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "params", "gflops", "cpu_ms"] + [f"{m}_{k}" for m in METRICS for k in ("mean", "std")])
        for r in rows:
            writer.writerow([r["variant"], r["params"], f"{r['gflops']:.4f}", f"{r['latency_ms']:.2f}"]
                            + [cell for m in METRICS for cell in (("", "") if r["metrics"][m] is None
                                                                  else (f"{v:.3f}" for v in r["metrics"][m]))])
    lines = [f"Ablation over seeds {seeds} (mean ± std, AP in %)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["variant"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.2f}", f"{r['latency_ms']:.1f}"]
        cells += ["n/a" if r["metrics"][m] is None else "{:.1f} ± {:.1f}".format(*r["metrics"][m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    (out_dir / "ablation.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out_dir / "ablation.png")


@plot_fonts()
def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for r in (r for r in rows if r["metrics"]["AP50:95"] is not None):
        mean, std = r["metrics"]["AP50:95"]
        axis.errorbar(r["gflops"], mean, yerr=std, fmt="o", capsize=3)
        axis.annotate(r["variant"], (r["gflops"], mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("GFLOPs")
    axis.set_ylabel("AP50:95 (%)")
    axis.set_title("AP against compute")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ablate(graphs: list[str], recipe: str, out_dir: str | Path, seeds=(0,), epochs: int | None = None,
           updates=(), device: str | None = None) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [variant_name(g) for g in graphs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two variants share a file name: {names}", where="GRAPH",
                          hint="give each variant its own file name; it names its row and folder")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be 1 or more, got {epochs}", where="--epochs",
                          hint="leave it out to train for the recipe's epochs")
    for graph in graphs:  # every variant builds before any trains: a typo in the last one fails now, not hours later
        model_figures(graph, recipe, list(updates), timed=False)
    rows = []
    for graph in graphs:
        results = [run_variant(graph, recipe, seed, out_dir, epochs, list(updates), device) for seed in seeds]
        rows.append({"variant": variant_name(graph), "graph": graph, **model_figures(graph, recipe, list(updates)),
                     "metrics": summarise(results)})
        write_reports(rows, out_dir, list(seeds))  # a partial table is there even if a later variant fails
    print((out_dir / "ablation.md").read_text())
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="+", help="graph variants (YAML files)")
    parser.add_argument("--recipe", required=True, help="run config shared by every variant (its graph is replaced)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("-o", "--output", default="outputs/ablation")
    parser.add_argument("-d", "--device")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    ablate(args.graphs, args.recipe, args.output, args.seeds, args.epochs, args.update, args.device)


if __name__ == "__main__":
    cli_main(main)
