"""`python -m analyze.info` against a count made by hand from the tiny graph's shapes."""
import json
import subprocess
import sys


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


def test_info_imgsz_override_scales_flops():
    def flops(*extra):
        out = subprocess.run([sys.executable, "-m", "analyze.info", "graphs/examples/tiny.yaml", "--json", *extra],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["flops"]

    # every op is per pixel, so 4x the pixels is 4x the FLOPs
    assert flops("--imgsz", "128", "128") == 4 * flops()


def calflops_count(model, shape) -> int:
    """calflops (the official zoos' counter) on the same model; its package imports transformers
    only for its HF entry point, which we do not use."""
    import types

    import pytest
    sys.modules.setdefault("calflops.flops_counter_hf", types.SimpleNamespace(calculate_flops_hf=None))
    calflops = pytest.importorskip("calflops.flops_counter")
    flops, _, _ = calflops.calculate_flops(model=model, input_shape=shape, output_as_string=False,
                                           print_results=False, print_detailed=False)
    return flops


def test_counter_equals_calflops_on_tiny_graph():
    from metrics.flops import count_flops, deployed_copy
    from models import build_model
    import torch

    model = deployed_copy(build_model("graphs/examples/tiny.yaml"))
    assert count_flops(model, torch.zeros(1, 3, 64, 64)).flops == calflops_count(model, (1, 3, 64, 64))
