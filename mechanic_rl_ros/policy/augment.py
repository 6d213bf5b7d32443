"""Colour and viewpoint augmentation of camera images for training, so that a policy learns the task
rather than one scene's colours and one camera pose.

A policy cloned from a few demonstrations finds the cube by its colour at its place in a fixed image
(docs/world.md): another cube colour, a camera turned by 5 degrees or a lens 5 degrees narrower take
``lift_demos`` from 95 % to 13-40 %. Training on demonstrations whose images are jittered in colour
and slightly warped is the cheapest remedy, and a standard one for image-based control (random shifts:
DrQ, Kostrikov et al., ICLR 2021; colour jitter and crops: RAD, Laskin et al., NeurIPS 2020; domain
randomisation, Tobin et al., IROS 2017). The random shift of :func:`~mechanic_rl_ros.policy.policy.random_shift`
stays separate: it is part of the checkpoint's pretraining.

Every function takes and returns uint8 ``[B, T, H, W, 3]`` (B samples of T frames), draws once per sample
(all frames of a sample get the same transform: the network sees motion, not flicker), and draws from the
``generator`` it is given, so a seeded learner stays deterministic. No ROS imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: RGB -> YIQ (NTSC); a hue rotation turns the (I, Q) chroma plane and leaves the luma Y alone
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_LUMA = torch.tensor([0.299, 0.587, 0.114])

#: at strength 1: brightness, contrast and saturation factors in [0.7, 1.3]; hue turned by up to +-180 deg
COLOR_FACTOR = 0.3
#: at strength 1: rotation up to +-6 deg, zoom in [1/1.15, 1.15], shift up to +-12 % of the half width
WARP_DEGREES, WARP_ZOOM, WARP_SHIFT = 6.0, 0.15, 0.12


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation scaled by factors in ``1 +- 0.3 strength`` and the hue turned by
    up to ``+-180 strength`` degrees (a rotation of YIQ's chroma plane, which keeps each pixel's luma).

    ``strength`` 0 returns the images unchanged; 1 reaches every hue (a red cube may come out green or
    blue, the table with it)."""
    if strength <= 0:
        return images
    b = images.shape[0]
    x = images.float() / 255.0
    s = COLOR_FACTOR * strength
    view = (b, 1, 1, 1, 1)
    x = x * _uniform(b, 1 - s, 1 + s, generator).view(view)
    mean = (x * _LUMA).sum(-1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * _uniform(b, 1 - s, 1 + s, generator).view(view) + mean
    grey = (x * _LUMA).sum(-1, keepdim=True)
    x = grey + (x - grey) * _uniform(b, 1 - s, 1 + s, generator).view(view)
    angle = _uniform(b, -math.pi, math.pi, generator).double() * min(strength, 1.0)
    rot = torch.zeros(b, 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    m = (torch.linalg.inv(_YIQ) @ rot @ _YIQ).float()
    x = torch.einsum("bij,bthwj->bthwi", m, x)
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def warp(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A small similarity transform about the image centre: rotation up to ``+-6 strength`` degrees, zoom by
    a factor in ``[1/(1 + 0.15 strength), 1 + 0.15 strength]``, shift up to ``+-12 strength`` % of the half
    width; pixels from outside repeat the border (bilinear sampling).

    At strength 1 it spans a camera turned by about 5 degrees or a field of view 5 degrees narrower or
    wider (45 -> 40 deg is a zoom of 1.14)."""
    if strength <= 0:
        return images
    b, t, h, w, _ = images.shape
    angle = _uniform(b, -1.0, 1.0, generator) * math.radians(WARP_DEGREES * strength)
    zoom = torch.exp(_uniform(b, -1.0, 1.0, generator) * math.log1p(WARP_ZOOM * strength))
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = zoom * torch.cos(angle), -zoom * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = zoom * torch.sin(angle), zoom * torch.cos(angle)
    theta[:, :, 2] = (torch.rand(b, 2, generator=generator) * 2 - 1) * WARP_SHIFT * strength
    x = images.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()
    grid = F.affine_grid(theta.repeat_interleave(t, 0), [b * t, 3, h, w], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).reshape(b, t, 3, h, w).permute(0, 1, 3, 4, 2).contiguous()


@dataclass(frozen=True)
class ImageAugment:
    """What a learner does to a batch's camera images: ``warp`` then ``color`` (strengths, 0 = off) on a
    random ``prob`` share of the samples; the rest stay as recorded, so the unchanged scene stays in
    every batch."""

    color: float = 0.0
    warp: float = 0.0
    prob: float = 0.8

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.color > 0 or self.warp > 0)

    def __call__(self, images: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                 first: int | None = None) -> dict[str, torch.Tensor]:
        """``{camera: uint8 [B, T, H, W, 3]}`` -> a new dict (the inputs are not written to). ``first``: only
        samples ``0 .. first-1`` may change (the same random numbers are drawn either way)."""
        if not self.active:
            return images
        out = {}
        for cam, img in images.items():
            img = torch.as_tensor(img)
            pick = torch.rand(img.shape[0], generator=generator) < self.prob
            if first is not None:
                pick &= torch.arange(img.shape[0]) < int(first)
            if not bool(pick.any()):
                out[cam] = img
                continue
            aug = color_jitter(warp(img[pick], self.warp, generator), self.color, generator)
            img = img.clone()
            img[pick] = aug
            out[cam] = img
        return out
