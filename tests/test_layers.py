"""Imports run one way: the import-linter contract (.importlinter) holds the layers, and the checks it
cannot express hold here: no import cycle between modules, no module imports an entry point, bench/
never imports tests/."""
import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "blocks", "models", "data", "metrics", "engine", "analyze", "detrzoo")
ENTRY_POINTS = ("train", "distill", "predict", "export")


def test_lint_imports_keeps_the_layer_contract():
    script = Path(sys.executable).with_name("lint-imports")   # the console script beside this interpreter
    done = subprocess.run([str(script) if script.is_file() else "lint-imports", "--no-cache"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 broken" in done.stdout


def strongly_connected(graph) -> list[list[str]]:
    """Tarjan's algorithm over the direct imports: every group of modules that import each other."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(module):
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycle_between_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert strongly_connected(graph) == []


def imported_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("folder", [*PACKAGES, "bench"])
def test_nothing_imports_an_entry_point_and_bench_never_imports_tests(folder):
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for name in imported_names(path):
            top = name.split(".")[0]
            if top in ENTRY_POINTS or (folder == "bench" and top == "tests"):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert bad == []


def test_the_checker_finds_a_cycle():
    class Graph:  # a -> b -> c -> a, and d alone
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, module):
            return self.edges[module]

    assert strongly_connected(Graph()) == [["a", "b", "c"]]
