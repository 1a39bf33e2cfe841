"""The DCNv3/DCNv4 sampling operator in plain PyTorch (grid_sample), for CPU and as the reference path.

Each output pixel reads, per channel group, P = k*k points: its kernel grid (spaced by `dilation`,
scaled by `offset_scale`) plus learned offsets, bilinearly, and sums them weighted by the mask."""
import torch
import torch.nn.functional as F


def _kernel_grid(k: int, dilation: int, device, dtype) -> torch.Tensor:
    """(P, 2) kernel point offsets in pixels as (x, y); the point index runs over y fastest, as the
    official kernels order them."""
    half = (dilation * (k - 1)) // 2
    steps = torch.arange(k, device=device, dtype=dtype) * dilation - half
    xs, ys = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((xs, ys), dim=-1).reshape(-1, 2)


def deform_sample(value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, k: int, stride: int, pad: int,
                  dilation: int, groups: int, offset_scale: float) -> torch.Tensor:
    """value (N, H, W, G*D) channels-last; offset (N, Ho, Wo, G*P*2) as (x, y) pairs per point;
    mask (N, Ho, Wo, G*P). Returns (N, Ho, Wo, G*D)."""
    value = F.pad(value, [0, 0, pad, pad, pad, pad])
    n, h_in, w_in, channels = value.shape
    _, h_out, w_out, _ = offset.shape
    points = k * k
    half = (dilation * (k - 1)) // 2
    ref_y = torch.arange(h_out, device=value.device, dtype=value.dtype) * stride + half
    ref_x = torch.arange(w_out, device=value.device, dtype=value.dtype) * stride + half
    ref = torch.stack(torch.meshgrid(ref_x, ref_y, indexing="xy"), dim=-1).reshape(1, h_out, w_out, 1, 1, 2)
    kernel = _kernel_grid(k, dilation, value.device, value.dtype).reshape(1, 1, 1, 1, points, 2)
    offset = offset.reshape(n, h_out, w_out, groups, points, 2)
    loc = ref + (kernel + offset) * offset_scale                               # pixels of the padded map
    size = torch.tensor([w_in, h_in], device=value.device, dtype=value.dtype)
    grid = 2 * (loc + 0.5) / size - 1                                          # align_corners=False
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * groups, h_out * w_out, points, 2)
    value = value.permute(0, 3, 1, 2).reshape(n * groups, channels // groups, h_in, w_in)
    sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = mask.reshape(n, h_out * w_out, groups, points).permute(0, 2, 1, 3).reshape(n * groups, 1, h_out * w_out, points)
    out = (sampled * mask).sum(-1)                                             # (N*G, D, Ho*Wo)
    return out.reshape(n, channels, h_out, w_out).permute(0, 2, 3, 1)
