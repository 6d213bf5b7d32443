"""Conditional 1D temporal U-Net with FiLM conditioning (Chi et al., RSS 2023, Sec. III-B).

The network predicts the noise eps_theta(x_k, k, O) added to an action
sequence x_k of shape [B, T_p, A].  Convolutions run over the time axis
(channels = action dimensions).  The observation features O and the diffusion
step k condition every residual block through FiLM (Perez et al., AAAI 2018):
a linear layer maps the conditioning vector to a per-channel scale gamma and
bias beta, and the block computes gamma * h + beta after its first convolution.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import UNetConfig


class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the (integer) diffusion step (Vaswani et al. 2017, Sec. 3.5)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError("step embedding dim must be even")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class TemporalConv1d(nn.Conv1d):
    """Same-padded stride-1 ``nn.Conv1d`` (identical parameters and outputs) computed as im2col + one GEMM
    when the input has many channels.

    With T_p = 16 the sequences are very short, and for >= 128 input channels
    PyTorch's CPU conv1d path was measured 1.5-3x slower than an explicit
    unfold + addmm (forward and backward, batch 1 and 64; see docs/policy.md).
    """

    #: use the GEMM path from this many input channels on (measured crossover between 64 and 256)
    GEMM_MIN_CHANNELS = 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels < self.GEMM_MIN_CHANNELS:
            return super().forward(x)
        k, p = self.kernel_size[0], self.padding[0]  # type: ignore[index]
        b, c, t = x.shape
        cols = F.pad(x, (p, p)).unfold(2, k, 1).permute(0, 2, 1, 3).reshape(b * t, c * k)
        y = torch.addmm(self.bias, cols, self.weight.reshape(self.out_channels, c * k).t())
        return y.view(b, t, self.out_channels).transpose(1, 2)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int):
        super().__init__(TemporalConv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout),
                         nn.Mish())


class FiLMResBlock(nn.Module):
    """Residual block of two conv blocks, FiLM-modulated in between by the conditioning vector."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int, groups: int):
        super().__init__()
        self.block1 = Conv1dBlock(cin, cout, kernel, groups)
        self.block2 = Conv1dBlock(cout, cout, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        gamma, beta = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block2(gamma * h + beta)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """eps_theta(x_k, k, global_cond): [B, T, A] x [B] x [B, C] -> [B, T, A].

    Encoder levels use ``down_dims`` channels, halving T between levels
    (stride-2 conv); the decoder upsamples with a transposed convolution and
    concatenates the encoder activation of the same resolution (skip).
    """

    def __init__(self, action_dim: int, global_cond_dim: int, cfg: UNetConfig):
        super().__init__()
        dims = list(cfg.down_dims)
        k, g, sd = cfg.kernel_size, cfg.n_groups, cfg.step_embed_dim
        self.step_embed = nn.Sequential(SinusoidalStepEmbedding(sd), nn.Linear(sd, 4 * sd), nn.Mish(),
                                        nn.Linear(4 * sd, sd))
        cond_dim = sd + global_cond_dim
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = action_dim
        for i, d in enumerate(dims):
            self.down.append(nn.ModuleList([FiLMResBlock(cin, d, cond_dim, k, g), FiLMResBlock(d, d, cond_dim, k, g)]))
            if i < len(dims) - 1:
                self.downsample.append(nn.Conv1d(d, d, 3, stride=2, padding=1))
            cin = d
        self.mid = nn.ModuleList([FiLMResBlock(dims[-1], dims[-1], cond_dim, k, g) for _ in range(cfg.mid_blocks)])
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in reversed(range(len(dims) - 1)):
            self.upsample.append(nn.ConvTranspose1d(dims[i + 1], dims[i], 4, stride=2, padding=1))
            self.up.append(nn.ModuleList([FiLMResBlock(2 * dims[i], dims[i], cond_dim, k, g),
                                          FiLMResBlock(dims[i], dims[i], cond_dim, k, g)]))
        self.final = nn.Sequential(Conv1dBlock(dims[0], dims[0], k, g), nn.Conv1d(dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([self.step_embed(t), global_cond], dim=-1)
        h = x.transpose(1, 2)  # [B, A, T]
        skips = []
        for i, (r1, r2) in enumerate(self.down):
            h = r2(r1(h, cond), cond)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        for r in self.mid:
            h = r(h, cond)
        for up, (r1, r2) in zip(self.upsample, self.up):
            h = torch.cat([up(h), skips.pop()], dim=1)
            h = r2(r1(h, cond), cond)
        return self.final(h).transpose(1, 2)
