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
