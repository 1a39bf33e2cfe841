"""`python -m analyze.info` against a count made by hand from the tiny graph's shapes."""
import contextlib
import json
import subprocess
import sys
from unittest import mock


def conv_flops(c_in, c_out, k, out_hw):
    """A deployed conv (BN folded into a bias) followed by SiLU, counted as the official zoos do:
    2 x MACs + one add per output for the bias + one op per output for the activation."""
    outputs = c_out * out_hw * out_hw
    return 2 * outputs * c_in * k * k + outputs + outputs


def test_info_equals_hand_count_for_tiny_graph():
    result = subprocess.run([sys.executable, "-m", "analyze.info", "graphs/examples/tiny.yaml", "--json", "--per-layer"],
                            capture_output=True, text=True, check=True)
    info = json.loads(result.stdout)
    # rows: Conv 3->8 k3 s2, Conv 8->16 k3 s2, 2x Conv 16->16 k3, Upsample x2, Concat, Conv 24->8 k1
    convs = [(3, 8, 3), (8, 16, 3), (16, 16, 3), (16, 16, 3), (24, 8, 1)]
    weights = sum(ci * co * k * k for ci, co, k in convs)
    assert info["params"] == weights + sum(2 * co for _, co, _ in convs)        # BN weight + bias
    assert info["params_deploy"] == info["params_deploy_official"] == weights + sum(co for _, co, _ in convs)  # folded
    flops = (conv_flops(3, 8, 3, 32) + conv_flops(8, 16, 3, 16) + 2 * conv_flops(16, 16, 3, 16)
             + 16 * 16 * 16            # x2 upsample: calflops counts the INPUT elements (its scale multiply is a no-op)
             + conv_flops(24, 8, 1, 32))
    assert info["flops"] == flops
    assert info["gflops"] == round(flops / 1e9, 4)
    per_layer = [row["gflops"] * 1e9 for row in info["layers"]]
    assert per_layer[0] == conv_flops(3, 8, 3, 32)
    assert sum(per_layer) == flops
    # MACs: the convolutions' multiply-accumulates alone (no bias add, activation or upsample)
    macs = [co * hw * hw * ci * k * k for (ci, co, k), hw in zip(convs, (32, 16, 16, 16, 32))]
    assert info["macs"] == sum(macs) and info["gmacs"] == round(sum(macs) / 1e9, 4)
    assert [round(row["gmacs"] * 1e9) for row in info["layers"]] == [macs[0], macs[1], macs[2] + macs[3], 0, 0, macs[4]]


def test_macs_of_linear_matmul_einsum_and_attention_equal_a_hand_count():
    import torch
    from torch import nn

    from metrics.flops import count_flops

    class Products(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(6, 4)
            self.attention = nn.MultiheadAttention(8, 2)

        def forward(self, x):                              # x: [5, 6]
            y = self.linear(x)                             # 5*6*4 MACs (the bias add is no MAC)
            gram = y @ y.T                                 # [5,4]x[4,5]: 5*5*4
            mix = torch.einsum("ij,jk->ik", gram, y)       # i5 j5 k4: 5*5*4
            tokens = torch.relu(mix).repeat(1, 2).unsqueeze(1)  # [5 tokens, batch 1, 8]: no MACs
            out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
            return out

    # attention: q, k, v projections 5*8*8 each, output projection 5*8*8 (what calflops sees in it)
    hand = 5 * 6 * 4 + 5 * 5 * 4 + 5 * 5 * 4 + 4 * 5 * 8 * 8
    profile = count_flops(Products(), torch.randn(5, 6))
    assert profile.macs == hand
    assert profile.flops > 2 * hand                       # + bias adds, relu, as FLOPs only


def test_info_of_a_run_config_is_info_of_its_graph_at_its_size_and_class_count():
    import yaml

    def info(*args):
        out = subprocess.run([sys.executable, "-m", "analyze.info", *args, "--json"], capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out)

    from_config = info("-c", "configs/demo.yml", "-u", "imgsz=[96, 96]")
    graph = yaml.safe_load(open("configs/demo.yml"))["graph"]
    assert from_config["imgsz"] == [96, 96] and from_config["nc"] == graph["nc"] == 3
    from analyze.info import model_info
    direct = model_info(graph, imgsz=(96, 96), nc=3)
    assert {k: from_config[k] for k in ("params", "params_deploy", "macs", "flops")} == \
           {k: direct[k] for k in ("params", "params_deploy", "macs", "flops")}


def test_info_imgsz_override_scales_flops():
    def flops(*extra):
        out = subprocess.run([sys.executable, "-m", "analyze.info", "graphs/examples/tiny.yaml", "--json", *extra],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["flops"]

    # every op is per pixel, so 4x the pixels is 4x the FLOPs
    assert flops("--imgsz", "128", "128") == 4 * flops()


@contextlib.contextmanager
def official_attention_calls():
    """While calflops counts: the attention that the official code calls with its weights returned
    (flagged `counted_with_weights`; fused here, need_weights=False) returns them, so calflops sees
    the official call's softmax."""
    from torch import nn

    forward = nn.MultiheadAttention.forward

    def with_weights(self, *args, **kwargs):
        if getattr(self, "counted_with_weights", False):
            kwargs["need_weights"] = True
        return forward(self, *args, **kwargs)

    with mock.patch.object(nn.MultiheadAttention, "forward", with_weights):
        yield


def calflops_count(model, shape) -> int:
    """calflops (the official zoos' counter) on the same model, attention called as officially; its
    package imports transformers only for its HF entry point, which we do not use."""
    import types

    import pytest
    sys.modules.setdefault("calflops.flops_counter_hf", types.SimpleNamespace(calculate_flops_hf=None))
    calflops = pytest.importorskip("calflops.flops_counter")
    with official_attention_calls():
        flops, _, _ = calflops.calculate_flops(model=model, input_shape=shape, output_as_string=False,
                                               print_results=False, print_detailed=False)
    return flops


def test_counter_equals_calflops_on_tiny_graph():
    from metrics.flops import count_flops, deployed_copy
    from models import build_model
    import torch

    model = deployed_copy(build_model("graphs/examples/tiny.yaml"))
    assert count_flops(model, torch.zeros(1, 3, 64, 64)).flops == calflops_count(model, (1, 3, 64, 64))
