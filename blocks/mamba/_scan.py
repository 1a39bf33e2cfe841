"""Mamba's selective scan: a pure-PyTorch sequential reference, or the fused CUDA kernel when installed."""
import torch
import torch.nn.functional as F

try:  # optional acceleration; the PyTorch path below is the reference
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _fused_scan
except ImportError:
    _fused_scan = None


def selective_scan(u, delta, A, B, C, D, delta_bias):
    """y_t = C_t . h_t + D u_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, dt = softplus(delta + bias).

    u, delta: (batch, d, L); A: (d, n); B, C: (batch, groups, n, L), each group serving d / groups
    channels; D, delta_bias: (d). Loops over L, vectorised over batch, channels and states."""
    if _fused_scan is not None and u.is_cuda:
        return _fused_scan(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True)
    batch, d, length = u.shape
    groups, n = B.shape[1], B.shape[2]
    delta = F.softplus(delta + delta_bias[:, None])
    B = B.repeat_interleave(d // groups, dim=1)                          # (batch, d, n, L)
    C = C.repeat_interleave(d // groups, dim=1)
    decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])               # (batch, d, L, n)
    drive = (delta * u).unsqueeze(-1) * B.transpose(2, 3)                # (batch, d, L, n)
    state = u.new_zeros(batch, d, n)
    states = []
    for t in range(length):
        state = decay[:, :, t] * state + drive[:, :, t]
        states.append(state)
    y = (torch.stack(states, 2) * C.transpose(2, 3)).sum(-1)
    return y + u * D[:, None]


def route_scan(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, routes: str = "cross"):
    """VMamba's multi-route 2-D scan. x: (B, d, H, W); the K routes are "cross" (row-major, column-major
    and both reversed; K = 4) or "bidi" (row-major and reversed; K = 2). Each route projects its own
    dt, B, C (x_proj_weight (K, rank + 2n, d), dt_projs_weight (K, d, rank), dt_projs_bias (K, d));
    A_logs: (K*d, n), Ds: (K*d). Returns the routes' outputs summed back in raster order, (B, d, H*W)."""
    b, d, h, w = x.shape
    length = h * w
    row = x.flatten(2)
    if routes == "cross":
        col = x.transpose(2, 3).flatten(2)
        xs = torch.stack((row, col, row.flip(-1), col.flip(-1)), 1)
    else:
        xs = torch.stack((row, row.flip(-1)), 1)
    k = xs.shape[1]
    rank, n = dt_projs_weight.shape[2], A_logs.shape[1]
    proj = torch.einsum("bkdl,kcd->bkcl", xs, x_proj_weight)
    dts, Bs, Cs = proj.split([rank, n, n], 2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, dt_projs_weight)
    y = selective_scan(xs.reshape(b, -1, length), dts.reshape(b, -1, length), -torch.exp(A_logs),
                       Bs, Cs, Ds, dt_projs_bias.flatten()).view(b, k, d, length)
    if routes != "cross":
        return y[:, 0] + y[:, 1].flip(-1)
    y_col = y[:, 1] + y[:, 3].flip(-1)
    return y[:, 0] + y[:, 2].flip(-1) + y_col.view(b, d, w, h).transpose(2, 3).reshape(b, d, length)
