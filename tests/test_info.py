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
    assert info["params_deploy"] == weights + sum(co for _, co, _ in convs)     # folded into conv bias
    flops = (conv_flops(3, 8, 3, 32) + conv_flops(8, 16, 3, 16) + 2 * conv_flops(16, 16, 3, 16)
             + 16 * 32 * 32            # nearest upsample: one op per output element
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
