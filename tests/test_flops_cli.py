"""`analyze.flops` figures against hand counts, and against the same block's row in `analyze.info`."""
import json
import subprocess
import sys

from analyze.flops import block_figures
from analyze.info import model_info


def test_conv_flops_equal_hand_count():
    # Conv 16->32, k3, s2 on 1x16x32x32 (eval, not fused): 2 x MACs, BN 2 per output, SiLU 1 per output
    figures = block_figures("Conv", shapes=[(1, 16, 32, 32)], args=[32, 3, 2])
    outputs = 32 * 16 * 16
    assert figures["flops"] == 2 * outputs * 16 * 9 + 2 * outputs + outputs
    assert figures["params"] == 32 * 16 * 9 + 2 * 32
    assert figures["output"] == [1, 32, 16, 16]


def test_se_attention_flops_equal_hand_count():
    # SE(64, reduction 16): global pool reads every input element; two 1x1 convs with bias on a 1x1 map
    # (64->4, ReLU, 4->64); the sigmoid and the rescaling product are not counted (calflops convention)
    figures = block_figures("SE", shapes=[(1, 64, 16, 16)], args=[16])
    hidden = 4
    assert figures["flops"] == 64 * 16 * 16 + (2 * 64 * hidden + hidden) + hidden + (2 * hidden * 64 + 64)


def test_block_figure_equals_its_row_in_a_graph(tmp_path):
    graph = tmp_path / "g.yaml"
    graph.write_text("imgsz: 64\nbackbone:\n  - [-1, 1, Conv, [32, 3, 2]]\n  - [-1, 1, SE, [16]]\n")
    info = model_info(graph, per_layer=True)
    row = info["layers"][1]
    assert round(row["gflops"] * 1e9) == block_figures("SE", shapes=[(1, 32, 32, 32)], args=[16])["flops"]


def test_all_blocks_json_lists_every_block_without_failures():
    result = subprocess.run([sys.executable, "-m", "analyze.flops", "--all", "--category", "attention",
                             "--repeats", "1", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    listing = json.loads(result.stdout)
    assert not listing["failures"]
    assert {"SE", "ECA", "CBAM"} <= {row["block"] for row in listing["blocks"]}


def test_deformable_conv_is_counted_like_a_conv():
    import torch
    import torchvision

    from metrics.flops import count_flops

    class Deformable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(6, 4, 3, 3))

        def forward(self, x):
            offset = x.new_zeros(x.shape[0], 18, x.shape[2], x.shape[3])
            return torchvision.ops.deform_conv2d(x, offset, self.weight, padding=1)

    outputs = 6 * 8 * 8
    # torchvision passes a zero bias when none is given, so the bias adds are counted too
    assert count_flops(Deformable(), torch.randn(1, 4, 8, 8)).flops == 2 * outputs * 4 * 9 + outputs


def test_dfine_decoder_flops_equal_calflops():
    """The decoder mixes linears, einsum-free deformable sampling, softmax and norms: its count must
    equal calflops' (the official zoos' counter) on the same module and input."""
    import sys
    import types

    import pytest
    import torch

    from metrics.flops import count_flops
    from blocks.registry import get
    from tests.test_info import official_attention_calls

    sys.modules.setdefault("calflops.flops_counter_hf", types.SimpleNamespace(calculate_flops_hf=None))
    calflops = pytest.importorskip("calflops.flops_counter")
    spec = get("DFINEDecoder")
    shapes = [(1, c, h, w) for _, c, h, w in spec.example["shapes"]]
    decoder = spec.cls([s[1] for s in shapes], *spec.example.get("args", []), **spec.example.get("kwargs", {})).eval()
    feats = [torch.randn(*s) for s in shapes]

    class Positional(torch.nn.Module):  # calflops moves each argument to the device, so no list argument
        def __init__(self):
            super().__init__()
            self.decoder = decoder

        def forward(self, *levels):
            return self.decoder(list(levels))

    with official_attention_calls():
        expected, _, _ = calflops.calculate_flops(model=Positional(), args=feats, output_as_string=False,
                                                  print_results=False, print_detailed=False)
    assert count_flops(decoder, feats).flops == expected
    assert block_figures("DFINEDecoder", shapes=shapes)["flops"] == expected
