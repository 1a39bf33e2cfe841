"""best.pth: written at every improvement of AP over the whole run (stage 1 or stage 2), beside the
stage files best_stg1.pth / best_stg2.pth; the first evaluation always writes it, even at AP -1."""
from types import SimpleNamespace

import pytest

from engine.solver import Solver


def files_written(aps: list[float], stop_epoch: int) -> list[set[str]]:
    """The checkpoint names each epoch's after_epoch writes, for the AP sequence `aps`."""
    solver = Solver.__new__(Solver)  # after_epoch alone: no model, no data
    written: list[str] = []
    solver.save = lambda *names, stats=None: written.extend(names)
    solver.logger = SimpleNamespace(epoch_line=lambda record: None, scalars=lambda *args: None)
    solver.cfg, solver.ema, solver.stop_epoch, solver.bad_total = {"checkpoint_freq": 0}, None, stop_epoch, 0
    solver.best, solver.stage2 = {"ap": -1.0, "epoch": -1}, {"reference": None, "pending_restart": False}
    per_epoch = []
    for epoch, ap in enumerate(aps):
        written.clear()
        solver.after_epoch(epoch, {}, {"stats": [ap] * 12}, 1.0)
        assert written[-1] == "last.pth"  # the resume point comes after the files resuming reads
        per_epoch.append(set(written) - {"last.pth"})
    return per_epoch


@pytest.mark.parametrize("stage2_aps, best_in_stage2", [([0.2, 0.25], False), ([0.2, 0.4], True)])
def test_best_pth_is_the_best_of_the_run_whichever_stage(stage2_aps, best_in_stage2):
    written = files_written([0.1, 0.3, *stage2_aps], stop_epoch=2)
    assert written[:2] == [{"best.pth", "best_stg1.pth"}] * 2
    assert written[2] == set()                       # stage 2 below stage 1's best: no best file changes
    assert written[3] == ({"best.pth", "best_stg2.pth"} if best_in_stage2 else set())


def test_first_evaluation_writes_best_pth_even_without_ground_truth():
    # COCOeval reports -1 when there is nothing to score; the run still has a best checkpoint
    assert files_written([-1.0, -1.0], stop_epoch=None) == [{"best.pth", "best_stg1.pth"}, set()]
