"""The README's block-zoo tables (`python bench/zoo_table.py --write README.md`) cannot drift: they list
every ablation graph on disk and every block that owns one, and a row's figures are analyze.info's."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from zoo_table import BEGIN, END, graph_subjects  # noqa: E402

ROW = re.compile(r"^\| \[(?P<block>[^\]]+)\]\([^)]+\) \| .*? \| \[[^\]]+\]\((?P<graph>[^)]+)\) "
                 r"\| (?P<params>[\d.]+) \([^)]*\) \| (?P<gflops>[\d.]+) \(")


def readme_tables() -> str:
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README.md lost its block-zoo markers"
    return readme.split(BEGIN, 1)[1].split(END, 1)[0]


def readme_rows() -> dict:
    return {m["block"]: m.groupdict() for m in map(ROW.match, readme_tables().splitlines()) if m}


def test_readme_links_every_ablation_graph_on_disk():
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "graphs/ablations").glob("*/*.yaml")}
    linked = set(re.findall(r"\]\((graphs/ablations/[^)]+\.yaml)\)", readme_tables()))
    linked.discard("graphs/ablations/deim-n-encoder-rows.yaml")   # the base, named in the header
    assert linked == on_disk, "rerun: python bench/zoo_table.py --write README.md"


def test_readme_has_a_row_for_every_block_that_owns_an_ablation_graph():
    owners = {name: graph for graph, names in graph_subjects().items() for name in names}
    assert {name: row["graph"] for name, row in readme_rows().items()} == owners, \
        "rerun: python bench/zoo_table.py --write README.md"


def test_a_rows_params_and_gflops_are_what_analyze_info_reports():
    from analyze.info import model_info

    row = readme_rows()["LAWDS"]
    info = model_info(ROOT / row["graph"])
    assert float(row["params"]) == round(info["params"] / 1e6, 3)
    assert float(row["gflops"]) == round(info["gflops"], 3)
