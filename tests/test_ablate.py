"""The ablation runner: two graph variants, one epoch, two seeds; rerunning trains nothing."""
import copy
import csv

import pytest
import yaml

from analyze import ablate as ablate_module
from core.errors import ConfigError, GraphError
from tests.engine_helpers import TINY_GRAPH, make_data, tiny_config


@pytest.mark.slow
def test_ablation_table_has_every_variant_and_rerun_skips_finished(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data", train=8, val=4)
    recipe = tiny_config(data, epochs=1)
    (tmp_path / "recipe.yml").write_text(yaml.safe_dump(recipe))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(TINY_GRAPH))
    variant = copy.deepcopy(TINY_GRAPH)
    variant["backbone"].insert(3, [-1, 1, "SE", [4]])   # an attention row after stage 3
    variant["decoder"][0][0] = [2, 4]                     # the decoder reads the shifted rows
    se_variant = tmp_path / "se.yaml"
    se_variant.write_text(yaml.safe_dump(variant))

    out = tmp_path / "ablation"
    rows = ablate_module.ablate([str(base), str(se_variant)], str(tmp_path / "recipe.yml"), out, seeds=[0, 1])
    assert [r["variant"] for r in rows] == ["base", "se"]
    assert rows[1]["params"] > rows[0]["params"]          # SE adds its two 1x1 convs
    with open(out / "ablation.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["variant"] for r in table] == ["base", "se"]
    assert "± " in (out / "ablation.md").read_text() and (out / "ablation.png").is_file()
    for name in ("base", "se"):
        assert (out / name / "seed0.json").is_file() and (out / name / "seed1.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was trained again")

    monkeypatch.setattr("engine.solver.Solver.fit", no_training)
    again = ablate_module.ablate([str(base), str(se_variant)], str(tmp_path / "recipe.yml"), out, seeds=[0, 1])
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rows]
    with pytest.raises(ConfigError, match="was made with another recipe, overrides, epochs or graph file"):
        ablate_module.ablate([str(base)], str(tmp_path / "recipe.yml"), out, seeds=[0], epochs=2)
    with pytest.raises(ConfigError, match="--epochs must be 1 or more, got 0"):
        ablate_module.ablate([str(base)], str(tmp_path / "recipe.yml"), out, seeds=[0], epochs=0)
    fresh, broken = tmp_path / "fresh.yaml", tmp_path / "broken.yaml"
    fresh.write_text(yaml.safe_dump(TINY_GRAPH))
    broken.write_text(yaml.safe_dump({**TINY_GRAPH, "backbone": [[-1, 1, "NoSuchBlock", [8]]]}))
    with pytest.raises(GraphError, match="NoSuchBlock"):  # raised before `fresh` would train (no_training)
        ablate_module.ablate([str(fresh), str(broken)], str(tmp_path / "recipe.yml"), out, seeds=[0])


def test_a_size_without_objects_reads_n_a_not_minus_100(tmp_path):
    results = [{"AP50:95": 0.5, "AP50": 0.7, "AP75": 0.4, "APs": 0.2, "APm": 0.3, "APl": -1.0}] * 2
    summary = ablate_module.summarise(results)
    assert summary["APl"] is None and summary["AP50:95"] == (50.0, 0.0)
    ablate_module.write_reports([{"variant": "v", "params": 1e6, "gflops": 1.0, "latency_ms": 2.0,
                                  "metrics": summary}], tmp_path, [0, 1])
    assert "| n/a |" in (tmp_path / "ablation.md").read_text()
    with open(tmp_path / "ablation.csv") as handle:
        row = next(csv.DictReader(handle))
    assert row["APl_mean"] == "" and row["AP50_mean"] == "70.000"
