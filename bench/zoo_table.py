"""The README's block-zoo tables: every ablation graph's cost beside the latency of the block it swaps in.

    python bench/zoo_table.py                         # measure, print the tables
    python bench/zoo_table.py --write README.md       # ... and put them between the README's block-zoo markers
    python bench/block_latency.py --json lat.json && python bench/zoo_table.py --latency lat.json --write README.md

For every graph graphs/ablations/<category>/<name>.yaml: params (train form) and GFLOPs (deploy form)
at its eval size (640x640), from `analyze.info.model_info`, the same figures `python -m analyze.info`
prints. The block a graph is about is the registered block whose file has the graph's name
(blocks/<category>/<name>.py); a block with no graph of its own name that appears in exactly one
ablation graph (Gold-YOLO's pieces, FullPAD_Tunnel) belongs to that graph. One row per such block, with
its paper's venue and year from its citation line and its CPU latency alone (deploy form, 1 thread,
timed by bench/block_latency.py unless --latency names a JSON file it wrote). Graphs that no block
owns (a variant built from existing blocks) are listed under their category's table."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.errors import cli_main  # noqa: E402
from analyze.info import model_info  # noqa: E402
from blocks.registry import CATEGORIES, blocks  # noqa: E402
from core.yaml_io import load_yaml  # noqa: E402

BASELINE = "graphs/ablations/deim-n-encoder-rows.yaml"
BEGIN, END = "<!-- block-zoo tables: begin (python bench/zoo_table.py --write README.md) -->", "<!-- block-zoo tables: end -->"


def ablation_graphs() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "graphs/ablations").glob("*/*.yaml"))


def graph_modules(path: str) -> set[str]:
    """Every module name a graph's rows use, nested `{module: Name}` blocks included."""
    graph, names = load_yaml(ROOT / path), set()

    def nested(value):
        if isinstance(value, dict):
            if "module" in value:
                names.add(value["module"])
            for item in value.values():
                nested(item)
        elif isinstance(value, list):
            for item in value:
                nested(item)

    for section in ("backbone", "encoder", "decoder"):
        for row in graph.get(section) or []:
            names.add(row[2])
            nested(row[3:])
    return names


def graph_subjects(graphs=None) -> dict[str, list[str]]:
    """{graph: the blocks it is the ablation of} (see the module docstring); a graph no block owns maps to []."""
    graphs = ablation_graphs() if graphs is None else graphs
    used = {graph: graph_modules(graph) for graph in graphs}
    by_stem = {Path(graph).stem: graph for graph in graphs}
    subjects = {graph: [] for graph in graphs}
    for spec in blocks():
        own = by_stem.get(spec.cls.__module__.rsplit(".", 1)[-1])
        users = [graph for graph in graphs if spec.name in used[graph]]
        if own is not None and spec.name in used[own]:
            subjects[own].append(spec.name)
        elif own is None and len(users) == 1:
            subjects[users[0]].append(spec.name)
    return subjects


def venue(citation: str) -> tuple[str, str]:
    """("IEEE TIP 2024", "https://...") from a citation line "Name: Title. Venue Year. https://link"."""
    link = re.search(r"https?://\S+", citation)
    text = (citation[: link.start()] if link else citation).split(": ", 1)[-1].strip()
    sentences = re.split(r"(?<=[.?!])\s+", text)
    found = sentences.pop().rstrip(".")
    if re.fullmatch(r"\d{4}", found) and sentences:
        # a bare year: the venue ends in an abbreviation ("Pattern Recognit. 2024", "Eng. Appl. Artif. Intell.
        # 2023") or there is none ("..., the DEIM plug-in project's own module. 2025": keep the last clause)
        before = sentences.pop()
        found = f"{before if len(before.split()) <= 3 else before.rsplit(', ', 1)[-1].rstrip('.')} {found}"
        while sentences and len(sentences[-1].split()) == 1:
            found = f"{sentences.pop()} {found}"
    return found, (link.group(0).rstrip(".") if link else "")


def measure_latency(names: list[str], repeats: int = 10) -> dict:
    """The same figures as `python bench/block_latency.py --json`, for `names` only."""
    from bench.block_latency import machine, measure

    torch.set_num_threads(1)
    load_before, rows = os.getloadavg()[0], []
    for name in names:
        rows.append(measure(name, repeats))
        print(f"{name}: {rows[-1]['deploy_ms']:.2f} ms at {rows[-1]['timed_at']}", file=sys.stderr, flush=True)
    return {"machine": machine(load_before), "repeats": repeats, "blocks": rows}


def _with_delta(value: float, base: float) -> str:
    delta = round(value - base, 3)
    return f"{value:.3f} ({delta if delta else 0.0:+.3f})"


def graph_title(graph: str) -> str:
    """The first sentence of a graph's header comment ("DEIM-N with ... (row 12)")."""
    lines = []
    for line in (ROOT / graph).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return re.split(r"(?<=\.)\s", " ".join(lines), maxsplit=1)[0].rstrip(".")


def format_tables(info: dict, latency: dict, subjects: dict, specs: dict, base: dict) -> str:
    lines = []
    for category in CATEGORIES:
        graphs = [g for g in subjects if Path(g).parent.name == category]
        rows = sorted(((name, graph) for graph in graphs for name in subjects[graph]), key=lambda r: r[0].lower())
        orphans = [g for g in graphs if not subjects[g]]
        if not rows and not orphans:
            continue
        lines += [f"### {category} ({len(rows)})", "",
                  "| block | paper | ablation graph | params M (vs base) | GFLOPs (vs base) | CPU ms | timed at |",
                  "|---|---|---|---|---|---|---|"]
        for name, graph in rows:
            spec, figures, timing = specs[name], info[graph], latency.get(name)
            where, link = venue(spec.citation)
            source = Path(*spec.cls.__module__.split(".")).with_suffix(".py")
            ms = f"{timing['deploy_ms']:.2f}" if timing else "n/a"
            shape = timing["timed_at"] + (f" ({timing['note'].split(' (')[0]})" if timing and timing["note"] else "") \
                if timing else ""
            lines.append(f"| [{name}]({source}) | {f'[{where}]({link})' if link else where} | [{Path(graph).stem}]({graph}) "
                         f"| {_with_delta(figures['params'] / 1e6, base['params'] / 1e6)} | {_with_delta(figures['gflops'], base['gflops'])} "
                         f"| {ms} | {shape} |")
        for graph in orphans:
            lines += ["", f"Also [{Path(graph).stem}]({graph}), built from existing blocks: {graph_title(graph)}; "
                          f"{_with_delta(info[graph]['params'] / 1e6, base['params'] / 1e6)} M params, "
                          f"{_with_delta(info[graph]['gflops'], base['gflops'])} GFLOPs."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def header(base: dict, latency: dict) -> str:
    machine = latency["machine"]
    return (f"Base: DEIM-N, [{Path(BASELINE).name}]({BASELINE}) (the same network as graphs/deim/deim-n.yaml): "
            f"{base['params'] / 1e6:.3f} M params, {base['gflops']:.3f} GFLOPs at {base['imgsz'][0]}x{base['imgsz'][1]}. "
            f"CPU ms: the block alone, deploy form, batch 1, median of {latency['repeats']} runs on {machine['cpu']} "
            f"({machine['cores']} cores, shared), {machine['threads']} thread, torch {machine['torch']}, "
            f"load average {machine['load_average'][0]} before the run and {machine['load_average'][1]} after "
            f"(other jobs share the cores).\n")


def write_between_markers(path: Path, text: str) -> None:
    readme = path.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{path} has no block-zoo markers:\n{BEGIN}\n{END}")
    head, rest = readme.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + text + rest[rest.index(END):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", help="JSON file written by bench/block_latency.py --json (default: measure now)")
    parser.add_argument("--write", metavar="README", help="replace the tables between the block-zoo markers of this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    subjects = graph_subjects()
    specs = {spec.name: spec for spec in blocks()}
    names = sorted(name for owned in subjects.values() for name in owned)
    latency = json.loads(Path(args.latency).read_text()) if args.latency else measure_latency(names)
    base = model_info(ROOT / BASELINE)
    info = {}
    for graph in subjects:
        info[graph] = model_info(ROOT / graph)
        print(f"{graph}: {info[graph]['params']:,} params, {info[graph]['gflops']:.3f} GFLOPs", file=sys.stderr, flush=True)
    by_block = {row["block"]: row for row in latency["blocks"]}
    text = header(base, latency) + "\n" + format_tables(info, by_block, subjects, specs, base)
    print(text)
    if args.write:
        write_between_markers(Path(args.write), text)


if __name__ == "__main__":
    cli_main(main)
