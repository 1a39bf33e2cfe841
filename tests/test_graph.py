"""The graph parser and Detector: rows, save list, scales, nested blocks, torch.nn rows, injection."""
import textwrap

import pytest
import torch
from torch import nn

from models import build_model
from models.graph import parse

TINY = "graphs/examples/tiny.yaml"
SCALED = "graphs/examples/scaled.yaml"


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_tiny_graph_builds_runs_forward_backward_and_keeps_only_read_outputs():
    model = build_model(TINY)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 8, 32, 32)  # row 5: 8 channels at stride 2
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    # rows 3 and 0 feed the Concat; every other row only feeds its successor
    assert model.save == {0, 3}
    assert [r.c_out for r in model.rows] == [8, 16, 16, 16, 24, 8]


def test_repeats_stack_copies_with_output_channels_as_input():
    model = build_model(TINY)
    stacked = model.layers[2]
    assert isinstance(stacked, nn.Sequential) and len(stacked) == 2
    assert all(m.conv.in_channels == 16 for m in stacked)


@pytest.mark.parametrize("scale, channels, depth", [("n", [16, 32, 32, 64, 64, 96], 2), ("s", [32, 64, 64, 128, 128, 192], 4)])
def test_scaled_graph_applies_width_depth_and_max_channels(scale, channels, depth):
    model = build_model(SCALED, scale=scale)
    assert [r.c_out for r in model.rows] == channels  # width x, capped at 256 then scaled; divisible by 8
    assert len(model.layers[2]) == depth  # 4 repeats x depth
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, channels[-1], 16, 16)


def test_scale_chosen_by_file_name_suffix(tmp_path):
    path = tmp_path / "scaled-s.yaml"
    path.write_text(open(SCALED).read())
    assert parse(path).scale == "s"
    assert parse(SCALED).scale == "n"  # no suffix: the first scale


def test_layer_table_lists_every_row_with_params_and_flops():
    from analyze.info import format_layer_table, layer_table

    model = build_model(TINY)
    table = layer_table(model)
    printed = format_layer_table(table, model.imgsz)
    assert "nn.Upsample" in printed and "Concat" in printed and "total" in printed
    assert [r["index"] for r in table] == list(range(6))
    assert table[0]["params"] == 3 * 8 * 9 + 2 * 8  # 3x3 conv without bias + BN weight and bias
    # row 0: 3->8 3x3 stride-2 conv at 64 px -> 32x32 out; 2*MACs, plus BN (2/elem) and SiLU (1/elem)
    out_elems = 8 * 32 * 32
    assert table[0]["gflops"] * 1e9 == pytest.approx(2 * out_elems * 3 * 9 + 2 * out_elems + out_elems)


def test_nested_module_arrives_as_factory_and_nn_rows_take_channels(tmp_path):
    path = write(tmp_path, """
        backbone:
          - [-1, 1, Conv, [8, 3, 2, null, 1, 1, {module: nn.ReLU, args: {inplace: false}}]]  # 0 act factory
          - [-1, 1, nn.Conv2d, [16, 3, 1, 1]]   # 1 torch.nn conv: in_channels injected
          - [-1, 1, nn.BatchNorm2d, []]         # 2 keeps channels
    """)
    model = build_model(path)
    assert [r.c_out for r in model.rows] == [8, 16, 16]
    assert model.layers[1].in_channels == 8
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 16, 16)


def test_graph_values_are_injected_by_parameter_name(tmp_path):
    from blocks.registry import register

    @register("neck", channels="same", name="_InjectionProbe")
    class Probe(nn.Module):
        def __init__(self, c1, num_classes=None, eval_spatial_size=None):
            super().__init__()
            self.seen = (num_classes, eval_spatial_size)

        def forward(self, x):
            return x

    path = write(tmp_path, """
        nc: 7
        imgsz: 96
        backbone:
          - [-1, 1, _InjectionProbe, []]
          - [-1, 1, _InjectionProbe, {num_classes: 2}]
    """)
    graph = parse(path)
    assert graph.layers[0].seen == (7, [96, 96])
    assert graph.layers[1].seen == (2, [96, 96])  # the row's own value wins
    assert parse(path, nc=3).layers[0].seen[0] == 3  # the dataset's count overrides the graph's


def test_run_returns_tapped_features():
    model = build_model(TINY)
    out, taps = model.run(torch.zeros(1, 3, 64, 64), taps=(1, 4))
    assert taps[1].shape == (1, 16, 16, 16) and taps[4].shape == (1, 24, 32, 32)


def test_deploy_fuses_conv_bn_and_keeps_outputs():
    model = build_model(TINY).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    expected = model(x)
    model.deploy()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
