"""Colour and viewpoint augmentation of training images (mechanic_rl_ros/policy/augment.py)."""
from __future__ import annotations

import torch

from mechanic_rl_ros.policy.augment import ImageAugment, color_jitter, warp


def images(b: int = 16, t: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, size, size, 3), generator=g, dtype=torch.uint8)


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def square(b: int, size: int = 32, half: int = 4) -> torch.Tensor:
    """A red square at the centre of a grey image, in both frames of every sample."""
    x = torch.full((b, 2, size, size, 3), 90, dtype=torch.uint8)
    c = size // 2
    x[:, :, c - half:c + half, c - half:c + half] = torch.tensor([220, 30, 20], dtype=torch.uint8)
    return x


def test_strength_zero_changes_nothing_and_shapes_and_dtype_are_kept():
    x = images()
    assert torch.equal(color_jitter(x, 0.0, gen()), x) and torch.equal(warp(x, 0.0, gen()), x)
    for y in (color_jitter(x, 1.0, gen()), warp(x, 1.0, gen())):
        assert y.shape == x.shape and y.dtype == torch.uint8 and not torch.equal(y, x)


def test_the_same_generator_seed_gives_the_same_images():
    x = images()
    assert torch.equal(color_jitter(x, 1.0, gen(5)), color_jitter(x, 1.0, gen(5)))
    assert torch.equal(warp(x, 1.0, gen(5)), warp(x, 1.0, gen(5)))
    assert not torch.equal(warp(x, 1.0, gen(5)), warp(x, 1.0, gen(6)))


def test_every_frame_of_a_sample_gets_the_same_transform():
    x = images(t=1).repeat(1, 3, 1, 1, 1)
    for y in (color_jitter(x, 1.0, gen()), warp(x, 1.0, gen())):
        assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])


def test_full_colour_jitter_turns_a_red_cube_into_other_hues_and_keeps_grey_grey():
    y = color_jitter(square(256), 1.0, gen()).int()
    cube = y[:, 0, 16, 16]                       # [B, 3] the square's colour per sample
    assert (cube[:, 1] > cube[:, 0]).sum() > 40   # green now dominates in a good share of samples
    assert (cube[:, 2] > cube[:, 0]).sum() > 40   # and blue in another
    grey = y[:, 0, 2, 2]                          # the grey background stays grey (no chroma to turn)
    assert int((grey.max(1).values - grey.min(1).values).max()) <= 2


def test_warp_keeps_the_centre_near_the_centre_within_its_bounds():
    y = warp(square(64, size=64, half=6), 1.0, gen())
    red = (y[..., 0].int() - y[..., 1].int() > 60)[:, 0].float()   # [B, H, W]
    ii = torch.arange(64, dtype=torch.float32)
    n = red.sum((1, 2))
    assert bool((n > 0).all())
    rows = (red.sum(2) * ii).sum(1) / n
    cols = (red.sum(1) * ii).sum(1) / n
    # centre 31.5; a shift of at most 12 % of the half width (3.8 px) plus rounding
    assert float((rows - 31.5).abs().max()) < 5.0 and float((cols - 31.5).abs().max()) < 5.0
    assert float((rows - 31.5).abs().max()) > 1.0  # it does move
    size = n.sqrt()                                 # the 12 px square zoomed by at most 1.15 either way
    assert float(size.min()) > 12 / 1.15 - 1.5 and float(size.max()) < 12 * 1.15 + 1.5


def test_image_augment_touches_its_share_of_samples_and_not_its_input():
    x = {"scene": images(b=400)}
    before = x["scene"].clone()
    y = ImageAugment(color=1.0, warp=1.0, prob=0.8)(x, gen())
    assert torch.equal(x["scene"], before)
    changed = (y["scene"] != before).flatten(1).any(1).float().mean()
    assert 0.7 < float(changed) < 0.9
    assert ImageAugment(color=1.0, prob=0.0)(x, gen()) is x and not ImageAugment().active


def test_first_limits_the_change_to_the_leading_samples():
    x = images(b=16)
    out = ImageAugment(color=1.0, warp=1.0, prob=1.0)(dict(scene=x), gen(), first=5)["scene"]
    assert torch.equal(out[5:], x[5:])
    assert all(not torch.equal(out[i], x[i]) for i in range(5))
