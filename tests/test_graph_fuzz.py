"""Fuzzed graphs: the parser builds a model that runs forward on a small image, or raises our own
error (DetrZooError) naming the problem; never any other exception.

Rows are drawn from the registry: each block's declared example, then mutated (wrong types,
zero/negative/odd numbers, missing or extra arguments, unknown keywords), plus rows with a bad
`from`, bad repeats, unknown names and malformed row shapes. Numbers stay small (<= 64) so every
example builds in milliseconds; whole backbones and DETR heads are left out for the same reason
(their rows are covered by the graph and corpus tests).

Examples per run: 300 (about 15 s on one core; 1000 took 22 s); DETRZOO_FUZZ_EXAMPLES sets another
count, and CI runs 3000 with the heavy tests (see the README).
The runs are derandomised (the same examples each time, so CI is stable); DETRZOO_FUZZ_RANDOM=1
explores new ones.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks import registry
from models import build_model
from core.errors import DetrZooError

EXAMPLES = int(os.environ.get("DETRZOO_FUZZ_EXAMPLES", "300"))
settings.register_profile("graph-fuzz", max_examples=EXAMPLES, deadline=None,
                          derandomize=os.environ.get("DETRZOO_FUZZ_RANDOM") != "1",
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Heavy to build at any size: whole backbones (timm/torchvision ones too), DETR heads, the hybrid encoder.
SKIPPED = {"HGNetv2", "PResNet", "TimmBackbone", "TorchvisionBackbone", "HybridEncoder"}
SPECS = [s for s in registry.blocks() if s.name not in SKIPPED and s.category != "decoder"]
ODD_VALUES = [0, -1, 1, 2, 3, 7, 64, 2.5, "x", None, True, [2, 2], {"a": 1}]
BAD_NAMES = ["Nope", "conv", "nn.Nope", "nn.functional", "nn.Module", "", 7, None, ["Conv"]]
TORCH_ROWS = [["nn.Identity", []], ["nn.Upsample", [None, 2, "nearest"]], ["nn.BatchNorm2d", []],
              ["nn.MaxPool2d", [3, 1, 1]], ["nn.Conv2d", [16, 3]], ["nn.GroupNorm", [2]]]


def example_args(spec) -> tuple[list, dict]:
    return list(spec.example.get("args", [])), dict(spec.example.get("kwargs", {}))


def rarely(draw, valid, invalid, one_in: int = 10):
    """`valid` most of the time, one of `invalid` about once in `one_in` draws."""
    # sampled_from, not integers: hypothesis favours small integers, which would make invalid common
    return draw(st.sampled_from(invalid)) if draw(st.sampled_from([False] * (one_in - 1) + [True])) else valid


@st.composite
def mutated_args(draw, spec):
    args, kwargs = example_args(spec)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        choice = draw(st.sampled_from(["replace", "drop", "extra", "keyword", "bad_keyword", "shape"]))
        if choice == "replace" and args:
            args[draw(st.integers(0, len(args) - 1))] = draw(st.sampled_from(ODD_VALUES))
        elif choice == "drop" and args:
            args.pop()
        elif choice == "extra":
            args.append(draw(st.sampled_from(ODD_VALUES)))
        elif choice == "keyword" and kwargs:
            kwargs[draw(st.sampled_from(sorted(kwargs)))] = draw(st.sampled_from(ODD_VALUES))
        elif choice == "bad_keyword":
            kwargs[draw(st.sampled_from(["c3", "kernel", "num_classes", "targets"]))] = draw(st.sampled_from(ODD_VALUES))
        elif choice == "shape":
            return draw(st.sampled_from([7, "args", None, [[1], [2]], [args, kwargs, {}]]))
    return [args, kwargs] if kwargs else args


@st.composite
def source(draw, index, multi):
    invalid = rarely(draw, None, [[index], [index + 3], [-index - 2], [1.5], ["x"], [True], [[]], [None]])
    if invalid:  # forward, out of range, wrong type, empty
        return invalid[0]
    earlier = st.integers(-1, index - 1) if index else st.just(-1)
    if multi:
        return draw(st.lists(earlier, min_size=2, max_size=3))
    return draw(st.one_of(st.just(-1), earlier))


@st.composite
def row(draw, index):
    kind = draw(st.sampled_from(["registry"] * 12 + ["torch.nn"] * 2 + ["malformed", "bad name"]))
    if kind == "malformed":
        return draw(st.sampled_from([["Conv"], [-1, 1, "Conv"], [-1, 1, "Conv", [8], 5], "Conv", {"from": -1}, 3]))
    if kind == "bad name":
        return [-1, 1, draw(st.sampled_from(BAD_NAMES)), []]
    if kind == "torch.nn":
        name, args = draw(st.sampled_from(TORCH_ROWS))
        return [draw(source(index, False)), 1, name, args]
    spec = draw(st.sampled_from(SPECS))
    multi = "shapes" in spec.example
    repeats = rarely(draw, draw(st.sampled_from([1, 1, 2])), [0, -1, 65, 10 ** 9, "2", 1.5])
    return [draw(source(index, multi)), repeats, spec.name, draw(mutated_args(spec))]


@st.composite
def graphs(draw):
    rows = [draw(row(i)) for i in range(draw(st.integers(1, 4)))]
    graph = {"nc": rarely(draw, 3, [0, -1, "3", None], one_in=20), "imgsz": [64, 64], "backbone": rows}
    scales = rarely(draw, None, [{"n": [0.5, 0.25, 64]}, {"n": [1.0, 2.0, 32]}, {"n": [0.5]}, [1, 2], {"n": "x"}])
    if scales is not None:
        graph["scales"] = scales
    return graph


REPO = Path(__file__).resolve().parents[1]


def raised_in(error: BaseException) -> Path:
    """The file of the innermost frame that raised `error`."""
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve()


def example_form(spec):
    args, kwargs = example_args(spec)
    return [args, kwargs] if kwargs else args


def assert_not_a_block_bug(err: DetrZooError, graph: dict) -> None:
    """Where a wrapped error came from. A row with its block's own example arguments must build and run
    at any input width, or refuse it with our error (ChannelError, ArgumentError): an exception raised
    inside the block's code (an IndexError, a TypeError of `range('x')`, a division by zero) is a bug
    in that block, which the parser's "could not be built" message would otherwise hide. Rows with
    mutated arguments may fail anywhere, as long as the error names the row."""
    match = re.search(r"row (\d+) ", err.where or "")
    rows = graph.get("backbone") if isinstance(graph.get("backbone"), list) else []
    if match is None or int(match.group(1)) >= len(rows):
        return
    row = rows[int(match.group(1))]
    spec = next((s for s in SPECS if isinstance(row, list) and len(row) == 4 and row[2] == s.name), None)
    if spec is None or row[3] != example_form(spec) or row[1] != 1:
        return
    if spec.multi_input and "failed on input of shape" in err.message:
        return  # maps of other sizes than the block fuses (a pyramid, equal sizes): the message shows the shapes
    cause = err.__cause__
    while cause is not None and not isinstance(cause, DetrZooError):
        origin = raised_in(cause)
        assert REPO / "blocks" not in origin.parents, (
            f"{type(cause).__name__} raised inside {origin.relative_to(REPO)}: {cause}\n(wrapped as: {err})")
        cause = cause.__cause__ or cause.__context__


@pytest.mark.fuzz
@pytest.mark.filterwarnings("ignore")
@settings(settings.get_profile("graph-fuzz"))
@given(graphs())
def test_random_graph_builds_and_runs_or_raises_our_error(graph):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = build_model(graph)
        except DetrZooError as err:
            assert str(err)  # our errors always say something
            assert_not_a_block_bug(err, graph)
            return
        model.eval()
        with torch.no_grad():
            model(torch.rand(1, 3, 64, 64))


def test_a_block_bug_under_its_own_example_arguments_is_caught():
    spec = SPECS[0]
    code = compile("def build():\n    return [][1]\n", str(REPO / "blocks" / spec.category / "buggy.py"), "exec")
    scope = {}
    exec(code, scope)  # noqa: S102 (a fixed snippet: an IndexError whose frame lies in blocks/)
    try:
        scope["build"]()
    except IndexError as bug:
        wrapped = DetrZooError(f"{spec.name} could not be built: IndexError", where="<dict>, row 0 (backbone)")
        wrapped.__cause__ = bug
    graph = {"backbone": [[-1, 1, spec.name, example_form(spec)]]}
    with pytest.raises(AssertionError, match="IndexError raised inside blocks"):
        assert_not_a_block_bug(wrapped, graph)
    mutated = {"backbone": [[-1, 1, spec.name, [*example_args(spec)[0], "x"]]]}
    assert_not_a_block_bug(wrapped, mutated)  # other arguments than the example may fail anywhere
