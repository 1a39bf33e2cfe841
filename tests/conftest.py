import os

import torch

# Two cores: one intra-op thread per test process keeps timings stable and avoids oversubscription.
torch.set_num_threads(int(os.environ.get("DETRZOO_TEST_THREADS", "1")))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny graph trained for two epochs on tiny demo data, shared by the tests that need a
    checkpoint (analysis tools, export, distillation): {config, checkpoint, data, output}."""
    import yaml

    from engine.solver import Solver
    from tests.engine_helpers import make_data, tiny_config

    root = tmp_path_factory.mktemp("trained_run")
    data = make_data(root / "data", train=8, val=4)
    cfg = tiny_config(data, epochs=2, output_dir=str(root / "run"))
    config = root / "config.yml"
    config.write_text(yaml.safe_dump(cfg))
    from engine.config import load_config

    solver = Solver(load_config(config), seed=0, device="cpu")
    solver.fit()
    return {"config": config, "checkpoint": solver.output_dir / "last.pth", "data": data, "output": solver.output_dir}
