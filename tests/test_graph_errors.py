"""Every user mistake in a graph fails at build time with a message that names the file, the row
and the module, and says how to fix it."""
import subprocess
import sys
import textwrap

import pytest

from models import build_model
from core.errors import GraphError

BASE = """
backbone:
  - [-1, 1, Conv, [8, 3, 2]]          # 0
  - [-1, 1, Conv, [16, 3, 2]]         # 1
"""


def broken(tmp_path, rows: str, head: str = BASE):
    path = tmp_path / "broken.yaml"
    path.write_text(textwrap.dedent(head) + rows)
    return path


def error_of(path, **kwargs) -> str:
    with pytest.raises(GraphError) as info:
        build_model(path, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("rows, expected", [
    ("  - [-1, 1, HGStgae, []]\n", ["row 2", "unknown module 'HGStgae'"]),
    ("  - [-1, 1, conv, [8]]\n", ["row 2", "did you mean Conv"]),
    ("  - [5, 1, Conv, [8]]\n", ["row 2", "points forward", "rows 0..1"]),
    ("  - [-7, 1, Conv, [8]]\n", ["row 2", "before the first row"]),
    ("  - [[-1, 0], 1, Add, []]\n", ["row 2", "channel mismatch", "[16, 8]", "fix:"]),
    ("  - [-1, 1, Conv, [8, 3, 1, null, 1, 1, silu, false, 99]]\n", ["row 2", "wrong arguments for Conv", "takes (c2, k, s"]),
    ("  - [-1, 1, Conv, {c3: 8}]\n", ["row 2", "Conv has no argument 'c3'", "did you mean 'c2'"]),
    ("  - [-1, 1, Conv, [8, three]]\n", ["row 2", "Conv.k must be an integer, got 'three'"]),
    ("  - [-1, 1, Conv]\n", ["row 2", "[from, repeats, module, args]"]),
    ("  - [-1, 0, Conv, [8]]\n", ["row 2", "repeats must be a positive integer"]),
    ("  - [-1, 100000, Conv, [8]]\n", ["row 2", "exceeds the limit"]),
    ("  - [-1, 1, nn.Conv3x3, [8]]\n", ["row 2", "torch.nn has no module 'Conv3x3'"]),
    ("  - [-1, 1, Conv, [8, 3, 1, null, 1, 1, {module: Nope}]]\n", ["row 2", "nested module", "unknown module 'Nope'"]),
    ("  - [[-1, 0], 1, Concat, []]\n", ["row 2", "Concat failed on input of shape", "(1, 16, 16, 16)"]),
    ("  - [-1, 1, Index, [0]]\n", ["row 2", "channel mismatch", "multi-output"]),
])
def test_broken_row_is_reported_against_its_row(tmp_path, rows, expected):
    path = broken(tmp_path, rows)
    message = error_of(path)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_backbone_section(tmp_path):
    path = broken(tmp_path, "", head="encoder:\n  - [-1, 1, Conv, [8]]\n")
    assert "missing section 'backbone'" in error_of(path)


def test_empty_section(tmp_path):
    assert "section 'encoder' must be a non-empty list" in error_of(broken(tmp_path, "encoder: []\n"))


def test_unknown_scale_lists_the_known_ones(tmp_path):
    message = error_of("graphs/examples/scaled.yaml", scale="q")
    assert "unknown scale 'q'" in message and "n, s" in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = broken(tmp_path, "  - [-1, 1, Conv, [8, 3]\n  - [-1, 1, Conv, [8]]\n")
    message = error_of(path)
    assert "YAML syntax error" in message and "line 6" in message


def test_duplicate_keys_are_refused(tmp_path):
    path = broken(tmp_path, "nc: 3\nnc: 4\n")
    assert "duplicate key 'nc'" in error_of(path)


@pytest.mark.parametrize("nc", ["0", "-2", "three"])
def test_bad_class_count(tmp_path, nc):
    assert "nc must be a positive integer" in error_of(broken(tmp_path, f"nc: {nc}\n"))


def test_the_graphs_own_bad_class_count_is_an_error_even_when_the_dataset_gives_one(tmp_path):
    from models.graph import parse

    with pytest.raises(GraphError, match="nc must be a positive integer, got 'abc'"):
        parse({"nc": "abc", "backbone": [[-1, 1, "Conv", [8, 3, 2]]]}, nc=3)
    assert parse({"nc": 5, "backbone": [[-1, 1, "Conv", [8, 3, 2]]]}, nc=3).nc == 3   # the dataset's count wins


def test_decoder_must_be_last(tmp_path):
    from torch import nn

    from blocks.registry import register

    @register("decoder", channels="same", name="_TargetsProbe")
    class Probe(nn.Module):
        def __init__(self, c1):
            super().__init__()

        def forward(self, x, targets=None):
            return x

    path = broken(tmp_path, "  - [-1, 1, _TargetsProbe, []]\n  - [-1, 1, Conv, [8]]\n")
    assert "must be the last row" in error_of(path)


def test_cli_prints_message_without_traceback(tmp_path):
    path = broken(tmp_path, "  - [-1, 1, HGStgae, []]\n")
    result = subprocess.run([sys.executable, "-m", "analyze.info", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown module 'HGStgae'" in result.stderr and "row 2" in result.stderr
    assert "Traceback" not in result.stderr
