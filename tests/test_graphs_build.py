"""Every ablation and example graph builds and runs: building includes one checked 64 px eval forward
that names a failing row. (The official family graphs are built and counted in their own tests.)"""
from pathlib import Path

import pytest

from models import build_model

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = sorted(str(p.relative_to(ROOT)) for folder in ("graphs/ablations", "graphs/examples")
                for p in (ROOT / folder).rglob("*.yaml"))


def test_the_zoo_has_an_ablation_graph_per_family():
    families = {Path(g).parent.name for g in GRAPHS if g.startswith("graphs/ablations/")}
    assert {"attention", "conv", "downsample", "upsample", "neck", "mamba", "transformer", "mlp", "norm"} <= families


@pytest.mark.parametrize("graph", GRAPHS)
def test_graph_builds_and_runs(graph):
    model = build_model(ROOT / graph)
    assert len(model.rows) > 1


def test_encoder_rows_base_is_deim_n():
    from metrics.flops import count_params

    rows = build_model(ROOT / "graphs/ablations/deim-n-encoder-rows.yaml", check=False)
    whole = build_model(ROOT / "graphs/deim/deim-n.yaml", check=False)
    assert count_params(rows) == count_params(whole) == 3_782_693
