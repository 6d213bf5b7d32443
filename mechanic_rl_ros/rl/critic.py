"""The value function DPPO trains beside the policy: V(O) from the policy's own observation."""
from __future__ import annotations

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
