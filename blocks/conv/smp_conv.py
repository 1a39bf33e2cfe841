import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.common import fuse_conv_bn
from blocks.registry import register


@register("conv", channels="same", example={"args": [7], "shape": (2, 16, 16, 16)})
class SMPConv(nn.Module):
    """SMPConv: SMPConv: Self-moving Point Representations for Continuous Convolution. CVPR 2023. https://arxiv.org/abs/2304.02330

    A depth-wise large kernel built from n learnable points (positions, radii, per-channel weights):
    every tap takes the points' weights scaled by a linear (L1) falloff from each point; BN, plus a
    small depth-wise conv + BN beside it (the SMPCNN unit). Keeps channels. `fuse()` folds both BNs
    (into the point weights and the small conv).
    Compared with the authors' code (sangnekim/SMPConv smp_imagenet/models/SMPConv.py SMPCNN, its
    CUDA depth-wise conv replaced by F.conv2d; k 7): max abs diff 0 for the kernel and the output
    on (2, 16, 16, 16), eval mode.
    """

    def __init__(self, c: int, k: int = 13, n_points: int | None = None, n_points_divide: int = 4,
                 small_kernel: int = 5):
        """c: channels (kept). k: large kernel size (13 in the last stage of SMPConvNet). n_points:
        number of moving points (default k^2 // n_points_divide, as the authors). small_kernel: the
        parallel depth-wise conv."""
        super().__init__()
        n_points = n_points or k * k // n_points_divide
        if n_points < 1:
            raise ArgumentError(f"SMPConv needs at least one point, got n_points={n_points} for k={k}")
        self.kernel_size, self.n_points = k, n_points
        axis = torch.linspace(-1, 1, k)
        self.register_buffer("kernel_coord", torch.stack(torch.meshgrid(axis, axis, indexing="ij")).reshape(2, -1).T,
                             persistent=False)                                                # (k*k, 2)
        self.weight_coord = nn.Parameter(nn.init.trunc_normal_(torch.empty(n_points, 2), std=0.2, a=-1.0, b=1.0))
        self.radius = nn.Parameter(torch.full((n_points, 1), 2 * (2 / k)))
        self.weights = nn.Parameter(nn.init.trunc_normal_(torch.empty(c, n_points), std=0.02))
        self.norm = nn.BatchNorm2d(c)
        self.small = nn.Conv2d(c, c, small_kernel, padding=small_kernel // 2, groups=c, bias=False)
        self.small_norm = nn.BatchNorm2d(c)

    def kernel(self) -> torch.Tensor:
        """The (c, 1, k, k) depth-wise kernel the points describe."""
        # the authors clip the radius after every optimiser step; clamping here keeps the same range
        radius = self.radius.clamp(1e-3, 1.0)
        distance = (self.weight_coord[:, None, :] - self.kernel_coord[None]).abs().sum(-1)    # (n, k*k)
        falloff = F.relu(1 - distance / radius)
        k = self.kernel_size
        # taps were laid out row = first coordinate; the authors' kernel is that grid transposed and
        # flipped upside down
        kernel = (self.weights @ falloff).reshape(-1, k, k).transpose(1, 2).flip(1)
        return kernel.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        large = F.conv2d(x, self.kernel(), padding=self.kernel_size // 2, groups=x.shape[1])
        return self.norm(large) + self.small_norm(self.small(x))

    @torch.no_grad()
    def fuse(self):
        # BN is folded into the point weights and the small conv; the points are kept, since the
        # dense k x k kernel they describe would hold more parameters than they do
        if isinstance(self.norm, nn.Identity):
            return
        scale = self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)
        self.weights.mul_(scale[:, None])
        small = fuse_conv_bn(self.small, self.small_norm)
        small.bias.add_(self.norm.bias - self.norm.running_mean * scale)
        self.small, self.norm, self.small_norm = small, nn.Identity(), nn.Identity()
