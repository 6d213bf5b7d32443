"""Per-camera image encoder: a ResNet-18-style CNN with GroupNorm and a spatial softmax.

Written from the ResNet paper (He et al., CVPR 2016, Table 1: a 7x7/2 stem,
3x3/2 max-pool and four stages of two basic blocks with widths w, 2w, 4w, 8w),
with the two changes of Diffusion Policy (Chi et al., RSS 2023, Sec. IV-B):
GroupNorm replaces BatchNorm, and global average pooling is replaced by a
spatial softmax (Levine et al., JMLR 2016, Sec. 4.2) whose expected keypoint
coordinates feed a linear layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VisionConfig


def _gn(channels: int, group_size: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // group_size), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016, Fig. 2)."""

    def __init__(self, cin: int, cout: int, stride: int, group_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _gn(cout, group_size)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _gn(cout, group_size)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout, group_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """Keypoints as softmax-weighted mean image coordinates (Levine et al. 2016, Eq. in Sec. 4.2).

    A 1x1 convolution maps C channels to ``num_keypoints`` heat maps; each is
    soft-maxed over the H*W positions and reduced to its expected (x, y) in
    [-1, 1], giving ``2 * num_keypoints`` features.
    """

    def __init__(self, channels: int, num_keypoints: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        heat = self.proj(x).flatten(2)                            # [N, K, H*W]
        prob = torch.softmax(heat, dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # [H*W, 2]
        return (prob @ grid).reshape(n, 2 * self.num_keypoints)


class ResNetEncoder(nn.Module):
    """uint8-free image encoder: float images [N, 3, H, W] in [0, 1] -> features [N, feature_dim]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        w, gs = cfg.base_width, cfg.group_size
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), _gn(w, gs), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        stages = []
        cin = w
        for i, nblocks in enumerate(cfg.blocks_per_stage):
            cout = w * 2 ** i
            blocks = [BasicBlock(cin if b == 0 else cout, cout, (1 if i == 0 else 2) if b == 0 else 1, gs)
                      for b in range(nblocks)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        if cfg.pool == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(cin, cfg.num_keypoints)
            pooled = 2 * cfg.num_keypoints
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = cin
        self.out = nn.Linear(pooled, cfg.feature_dim)
        self.feature_dim = cfg.feature_dim

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # centre pixel values; the GroupNorm layers take care of the rest
        x = self.stem(img * 2.0 - 1.0)
        x = self.stages(x)
        return self.out(self.pool(x))
