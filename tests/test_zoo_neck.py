"""Focused checks for the neck/mamba/transformer/backbone/container group of the block zoo."""
import pytest
import torch

from models import build_model
from core.errors import GraphError


def container_graph(row):
    return {"nc": 2, "imgsz": [64, 64], "backbone": [[-1, 1, "Conv", [16, 3, 2]], row]}


def test_c2f_takes_two_different_inner_blocks_from_a_yaml_row():
    faster = build_model(container_graph([-1, 2, "C2f", {"c2": 32, "block": {"module": "FasterBlock", "args": {"n_div": 2}}}]))
    star = build_model(container_graph([-1, 2, "C2f", {"c2": 32, "block": {"module": "StarBlock", "args": {"mlp_ratio": 2}}}]))
    # the row's repeats go into C2f's inner count, and the nested args reach the inner block
    assert [type(m).__name__ for m in faster.layers[1].m] == ["FasterBlock", "FasterBlock"]
    assert faster.layers[1].m[0].spatial_mixing.c_conv == 8          # 16 channels / n_div 2
    assert [type(m).__name__ for m in star.layers[1].m] == ["StarBlock", "StarBlock"]
    assert star.layers[1].m[0].f1.out_channels == 32                  # 16 channels * mlp_ratio 2
    # by hand: cv1 Conv(16,32,1)+BN = 576, cv2 Conv(64,32,1)+BN = 2112,
    # FasterBlock(16, n_div 2) = PConv 8*8*9 + 1x1 16->32 + BN + 1x1 32->16 = 576 + 512 + 64 + 512
    assert sum(p.numel() for p in faster.layers[1].parameters()) == 576 + 2112 + 2 * (576 + 512 + 64 + 512)
    for model in (faster, star):
        out = model(torch.randn(1, 3, 64, 64))
        assert out.shape == (1, 32, 32, 32)


def test_c3k2_passes_its_inner_block_into_the_c3k_stacks():
    model = build_model(container_graph([-1, 1, "C3k2", {"c2": 32, "c3k": True, "block": {"module": "RepViTBlock", "args": {}}}]))
    c3k = model.layers[1].m[0]
    assert type(c3k).__name__ == "C3k" and [type(m).__name__ for m in c3k.m] == ["RepViTBlock", "RepViTBlock"]
    assert c3k.m[0].channel_mixer[0].conv.in_channels == 8           # C3k hidden = 16 * 0.5


def test_metaformer_takes_any_token_mixer():
    pool = build_model(container_graph([-1, 1, "MetaFormerBlock", {}]))
    star = build_model(container_graph([-1, 1, "MetaFormerBlock", {"token_mixer": {"module": "StarBlock", "args": {}}}]))
    assert type(pool.layers[1].token_mixer).__name__ == "Pooling"
    assert type(star.layers[1].token_mixer).__name__ == "StarBlock"


def test_nested_block_rejects_positional_args_and_channel_changes():
    with pytest.raises(GraphError, match="args as a dict"):
        build_model(container_graph([-1, 1, "C2f", {"c2": 32, "block": {"module": "StarBlock", "args": [2]}}]))
    with pytest.raises(GraphError, match="changes the channels"):
        build_model(container_graph([-1, 1, "C2f", {"c2": 32, "block": {"module": "Conv", "args": {"c2": 8}}}]))


def test_library_backbones_feed_index_rows_and_load_local_weights(tmp_path):
    import timm
    import torchvision

    from core.errors import CheckpointError

    graph = {"nc": 2, "imgsz": [64, 64], "backbone": [
        [-1, 1, "TorchvisionBackbone", ["resnet18"]], [0, 1, "Index", [2]],
        [-1, 1, "TimmBackbone", {"name": "test_resnet", "out_indices": [2, 4]}], [-1, 1, "Index", [1]]]}
    model = build_model(graph)
    # channels as the libraries report them: resnet18 layer4 = 512, timm test_resnet stage 4 = 96
    assert [row.c_out for row in model.rows] == [[128, 256, 512], 512, [48, 96], 96]

    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"model": reference.state_dict()}, path)
    graph["backbone"][0] = [-1, 1, "TorchvisionBackbone", {"name": "resnet18", "weights": str(path)}]
    loaded = build_model(graph).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, taps = loaded.run(x, taps=(0,))
        stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(stem))))
    torch.testing.assert_close(taps[0][2], expected)

    graph["backbone"][0] = [-1, 1, "TorchvisionBackbone", {"name": "resnet18", "weights": str(tmp_path / "none.pth")}]
    with pytest.raises(GraphError, match="weights not found"):  # the parser names the row
        build_model(graph)
    from blocks.backbone.timm_backbone import TimmBackbone
    with pytest.raises(CheckpointError, match="not found"):
        TimmBackbone(3, "test_resnet", weights=str(tmp_path / "none.pth"))
    timm_model = timm.create_model("test_resnet", pretrained=False)
    timm_path = tmp_path / "test_resnet.pth"
    torch.save(timm_model.state_dict(), timm_path)
    graph["backbone"][0] = [-1, 1, "TimmBackbone", {"name": "test_resnet", "weights": str(timm_path)}]
    loaded = build_model(graph)
    assert torch.equal(loaded.layers[0].model.conv1[0].weight, timm_model.conv1[0].weight)


@pytest.mark.parametrize("size", [8, 9])
def test_bi_level_routing_attention_equals_dense_attention_masked_to_routed_regions(size):
    from blocks.transformer.bi_level_routing_attention import BiLevelRoutingAttention

    torch.manual_seed(0)
    c, heads, rs = 8, 2, 4           # n_win 2 -> regions of 4x4 pixels; a 9x9 map is padded to 12x12
    block = BiLevelRoutingAttention(c, num_heads=heads, n_win=2, topk=2).eval()
    x = torch.randn(1, c, size, size)
    with torch.no_grad():
        q, k, v = block.qkv(x).chunk(3, 1)
        grid = -(-size // rs)
        region_of = lambda y, x_: (y // rs) * grid + x_ // rs
        # region means over the real pixels only, then each query region's 2 best key regions
        means = lambda t: torch.stack([t[0, :, ry * rs:(ry + 1) * rs, rx * rs:(rx + 1) * rs].mean((1, 2))
                                       for ry in range(grid) for rx in range(grid)])
        routes = (means(q) @ means(k).T).topk(2, -1).indices
        padded = grid * rs
        pad = lambda t: torch.nn.functional.pad(t, (0, padded - size, 0, padded - size)).flatten(2)[0]
        qf, kf, vf = pad(q), pad(k), pad(v)
        token_region = torch.tensor([region_of(i // padded, i % padded) for i in range(padded * padded)])
        allowed = (token_region[None, :, None] == routes[token_region][:, None, :]).any(-1)
        out = torch.zeros(c, padded * padded)
        for h in range(heads):
            rows = slice(h * c // heads, (h + 1) * c // heads)
            logits = (qf[rows].T @ kf[rows]) * c ** -0.5
            out[rows] = vf[rows] @ logits.masked_fill(~allowed, float("-inf")).softmax(-1).T
        out = out.view(1, c, padded, padded)[:, :, :size, :size]
        expected = block.output_linear(out + block.lepe(v))
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_bifpn_add_is_the_fast_normalised_weighted_sum_of_resized_inputs():
    import numpy as np

    from blocks.neck.bi_fpn_add import BiFPNAdd

    torch.manual_seed(0)
    block = BiFPNAdd([4, 4, 4], 4)
    with torch.no_grad():
        block.weights.copy_(torch.tensor([2.0, 1.0, -3.0]))       # ReLU drops the third input
    same, small, large = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 16, 16)
    out = block([same, small, large]).detach().numpy()
    upsampled = small.numpy().repeat(2, 2).repeat(2, 3)            # nearest x2 by hand
    torch.testing.assert_close(torch.from_numpy(out), torch.from_numpy((2 * same.numpy() + upsampled) / (3 + 1e-4)))
    with torch.no_grad():
        block.weights.copy_(torch.tensor([0.0, 0.0, 1.0]))
    pooled = np.full((1, 4, 8, 8), -np.inf, dtype=np.float32)       # 3x3 / stride 2 / pad 1 max pool by hand
    for i in range(8):
        for j in range(8):
            pooled[..., i, j] = large.numpy()[..., max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2].max((-1, -2))
    torch.testing.assert_close(block([same, small, large]).detach(), torch.from_numpy(pooled) / (1 + 1e-4))


def test_mfm_and_cga_fusion_of_an_input_with_itself():
    from blocks.neck.cga_fusion import CGAFusion
    from blocks.neck.mfm import MFM

    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    # MFM's weights are a softmax across the inputs: fusing x with itself gives x back
    torch.testing.assert_close(MFM([16, 16, 16], 16)([x, x, x]), x)
    # CGAFusion: (x + x) + p * x + (1 - p) * x = 3x whatever the gate p, then its 1x1 conv
    cga = CGAFusion([16, 16], 16)
    expected = torch.einsum("oc,bchw->bohw", cga.conv.weight[:, :, 0, 0], 3 * x) + cga.conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(cga([x, x]), expected, rtol=1e-5, atol=1e-5)


def test_selective_scan_equals_the_closed_form_recurrence():
    from blocks.mamba._scan import selective_scan

    torch.manual_seed(0)
    batch, d, n, length, groups = 2, 4, 3, 5, 2
    u, delta = torch.randn(batch, d, length, dtype=torch.float64), torch.randn(batch, d, length, dtype=torch.float64)
    A = -torch.rand(d, n, dtype=torch.float64) - 0.1
    B, C = torch.randn(batch, groups, n, length, dtype=torch.float64), torch.randn(batch, groups, n, length, dtype=torch.float64)
    D, bias = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    y = selective_scan(u, delta, A, B, C, D, bias)
    dt = torch.nn.functional.softplus(delta + bias[:, None])
    for b in range(batch):
        for c in range(d):
            g = c // (d // groups)
            for t in range(length):
                # h_t[k] = sum_{s<=t} exp(A[k] * sum_{r=s+1..t} dt_r) * dt_s * B_s[k] * u_s
                expected = D[c] * u[b, c, t]
                for s in range(t + 1):
                    decay = torch.exp(A[c] * dt[b, c, s + 1:t + 1].sum())
                    expected = expected + (C[b, g, :, t] * decay * dt[b, c, s] * B[b, g, :, s]).sum() * u[b, c, s]
                torch.testing.assert_close(y[b, c, t], expected)


def test_vssd_non_causal_ssd_equals_its_attention_form():
    from blocks.mamba.vssd_block import NonCausalSSD

    torch.manual_seed(0)
    mixer = NonCausalSSD(8, num_heads=2, d_state=4)
    h, w = 3, 4
    tokens = torch.randn(1, h * w, 8)
    z, xbc, dt = mixer.in_proj(tokens).split([16, 24, 2], -1)
    dt = torch.nn.functional.softplus(dt + mixer.dt_bias)
    xbc = torch.nn.functional.silu(mixer.conv2d(xbc.transpose(1, 2).reshape(1, -1, h, w))).flatten(2).transpose(1, 2)
    x, keys, queries = xbc.split([16, 4, 4], -1)
    heads = []
    for head in range(2):
        v = x[0, :, head * 8:(head + 1) * 8]
        # token i reads every token j (no causal mask): (C_i . B_j) * dt_j * |A| * v_j, plus D * v_i
        scores = queries[0] @ keys[0].T * (dt[0, :, head] * mixer.A_log[head].exp())[None, :]
        heads.append(scores @ v + mixer.D[head] * v)
    expected = mixer.out_proj(mixer.norm(torch.cat(heads, -1)) * z[0])
    torch.testing.assert_close(mixer(tokens, h, w)[0], expected, rtol=1e-5, atol=1e-5)
