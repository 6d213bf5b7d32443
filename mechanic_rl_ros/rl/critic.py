"""The critics: V(O) from the policy's own observation (DPPO) and the Q(features, action) ensemble that
value-guided selection trains to pick among the frozen policy's proposals."""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from mechanic_rl_ros.policy import PolicyConfig
from mechanic_rl_ros.policy.vision import ResNetEncoder


class ObsCritic(nn.Module):
    """V(O) from the policy's observation (T_o frames of images and low-dim state), no action input.

    Per camera a ResNet encoder of the policy's architecture (by default
    initialised from the pretrained policy's encoder; DPPO's pixel critic has
    its own encoder too), the normalised low-dim history, then a residual MLP
    with Mish activations (DPPO's ``CriticObs``: 256-256-256, residual, Mish).
    """

    def __init__(self, cfg: PolicyConfig, hidden: tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        self.cameras = tuple(cfg.cameras)
        self.encoders = nn.ModuleDict({cam: ResNetEncoder(cfg.vision) for cam in self.cameras})
        in_dim = cfg.obs_horizon * (len(self.cameras) * cfg.vision.feature_dim + cfg.lowdim_dim)
        self.inp = nn.Linear(in_dim, hidden[0])
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.out = nn.Linear(hidden[-1], 1)

    def forward(self, images: Mapping[str, torch.Tensor], lowdim: torch.Tensor | None) -> torch.Tensor:
        feats = []
        for cam in self.cameras:
            img = images[cam]
            b, t = img.shape[:2]
            x = img.flatten(0, 1).permute(0, 3, 1, 2)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            feats.append(self.encoders[cam](x).view(b, t, -1))
        if lowdim is not None:
            feats.append(lowdim)
        h = F.mish(self.inp(torch.cat(feats, dim=-1).flatten(1)))
        for layer in self.hidden:
            y = F.mish(layer(h))
            h = h + y if y.shape == h.shape else y
        return self.out(h).squeeze(-1)


class QEnsemble(nn.Module):
    """``n`` Q(features, action) MLPs with LayerNorm, evaluated in one batched pass -> [n, B].

    Each member is ``layers`` hidden layers of ``hidden`` units (Linear -> LayerNorm -> ReLU), initialised
    as ``nn.Linear`` would be, member by member; LayerNorm in the critic keeps Q bounded at high
    update-to-data ratios (Ball et al., "Efficient Online RL with Offline Data", RLPD, ICML 2023). The
    members' weights are stacked ([n, in, out]) so that the whole ensemble is one ``baddbmm`` per layer."""

    def __init__(self, n: int, feat_dim: int, act_dim: int, hidden: int, layers: int):
        super().__init__()
        self.n = int(n)
        dims = [feat_dim + act_dim] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norms_w = nn.ParameterList()
        self.norms_b = nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            w = torch.empty(self.n, a, b)
            for j in range(self.n):
                lin = nn.Linear(a, b)
                w[j] = lin.weight.detach().t()
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(self.n, 1, b).uniform_(-bound, bound)))
            if i < len(dims) - 2:
                self.norms_w.append(nn.Parameter(torch.ones(self.n, 1, b)))
                self.norms_b.append(nn.Parameter(torch.zeros(self.n, 1, b)))

    def forward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feat, action], dim=-1)
        x = x.unsqueeze(0).expand(self.n, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.layer_norm(x, x.shape[-1:]) * self.norms_w[i] + self.norms_b[i]
                x = F.relu(x)
        return x.squeeze(-1)
