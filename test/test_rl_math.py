"""GAE, the denoising discount, the clip schedule and the PPO loss against values computed by hand."""
import math

import pytest
import torch

from mechanic_rl_ros.rl.gae import (clip_schedule, denoising_advantages, denoising_discount, gae,
                                    normalize_advantages, ppo_clip_loss)


def _t(*v, dtype=torch.float64):
    return torch.tensor(v, dtype=dtype)


def test_gae_one_trajectory_cut_by_the_batch():
    # delta_0 = 1 + 0.9*0.2 - 0.5 = 0.68; delta_1 = 0 + 0.9*0.1 - 0.2 = -0.11; delta_2 = 2 + 0.9*0.7 - 0.1 = 2.53
    # A_2 = 2.53; A_1 = -0.11 + 0.72*2.53 = 1.7116; A_0 = 0.68 + 0.72*1.7116 = 1.912352
    adv, ret = gae(_t(1, 0, 2), _t(0.5, 0.2, 0.1), _t(0.2, 0.1, 0.7), _t(False, False, False, dtype=torch.bool),
                   _t(False, False, True, dtype=torch.bool), gamma=0.9, lam=0.8)
    assert adv.tolist() == pytest.approx([1.912352, 1.7116, 2.53], abs=1e-12)
    assert ret.tolist() == pytest.approx([2.412352, 1.9116, 2.63], abs=1e-12)


def test_gae_termination_ends_bootstrap_and_trace():
    # step 1 terminates: its next value (9.0) is ignored and nothing flows back past it from step 2
    # delta = [0 + .99*.4 - .3, 1 - .4, .5 + .99*.8 - .6] = [0.096, 0.6, 0.692]
    # A_2 = 0.692; A_1 = 0.6; A_0 = 0.096 + 0.99*0.95*0.6 = 0.6603
    adv, ret = gae(_t(0, 1, 0.5), _t(0.3, 0.4, 0.6), _t(0.4, 9.0, 0.8), _t(False, True, False, dtype=torch.bool),
                   _t(False, True, True, dtype=torch.bool), gamma=0.99, lam=0.95)
    assert adv.tolist() == pytest.approx([0.6603, 0.6, 0.692], abs=1e-12)
    assert ret.tolist() == pytest.approx([0.9603, 1.0, 1.292], abs=1e-12)


def test_gae_truncation_bootstraps_but_cuts_the_trace():
    # step 0 truncated: delta_0 = 1 + 0.5*2 - 0 = 2, and A_1 does not flow into A_0
    adv, _ = gae(_t(1, 5), _t(0, 1), _t(2, 3), _t(False, False, dtype=torch.bool), _t(True, True, dtype=torch.bool),
                 gamma=0.5, lam=1.0)
    assert adv.tolist() == pytest.approx([2.0, 5 + 1.5 - 1])


def test_gae_rejects_inconsistent_flags():
    with pytest.raises(ValueError, match="trace_end"):
        gae(_t(1, 1), _t(0, 0), _t(0, 0), _t(False, False, dtype=torch.bool), _t(False, False, dtype=torch.bool),
            0.9, 0.9)
    with pytest.raises(ValueError, match="terminated"):
        gae(_t(1, 1), _t(0, 0), _t(0, 0), _t(True, False, dtype=torch.bool), _t(False, True, dtype=torch.bool),
            0.9, 0.9)


def test_denoising_discount_and_shared_advantage():
    # K' = 3, gamma_denoise = 0.9: the last (action-producing) step gets 1, the noisiest 0.81
    assert denoising_discount(3, 0.9).tolist() == pytest.approx([0.81, 0.9, 1.0])
    a = denoising_advantages(_t(2.0, -1.0), denoising_discount(3, 0.5))
    assert a.flatten().tolist() == pytest.approx([0.5, 1.0, 2.0, -0.25, -0.5, -1.0])


def test_clip_schedule_exponential_from_base_to_clip():
    c = clip_schedule(3, clip=0.01, clip_base=0.001, rate=3.0)
    mid = 0.001 + 0.009 * (math.exp(1.5) - 1) / (math.exp(3.0) - 1)  # = 0.0026418...
    assert c.tolist() == pytest.approx([0.001, mid, 0.01], rel=1e-12)
    assert mid == pytest.approx(0.00264181, rel=1e-5)
    assert clip_schedule(1, 0.01, 0.001, 3.0).tolist() == [0.01]


def test_ppo_clip_loss_by_hand():
    logratio = torch.log(_t(1.0, 1.5, 0.5, 1.02)).view(2, 2)
    adv = _t(1.0, 1.0, -2.0, 3.0).view(2, 2)
    clip = _t(0.1, 0.2)
    loss, kl, frac = ppo_clip_loss(logratio, adv, clip)
    # elementwise max(-A r, -A clip(r)): (0,0) -1; (0,1) max(-1.5, -1.2) = -1.2;
    # (1,0) max(1.0, 1.8) = 1.8 (r = 0.5 clipped to 0.9); (1,1) -3.06  -> mean -0.865
    assert loss.item() == pytest.approx(-0.865, abs=1e-12)
    # k3: (r - 1) - log r = 0, 0.5 - ln 1.5, -0.5 + ln 2, 0.02 - ln 1.02
    want_kl = (0.5 - math.log(1.5) - 0.5 + math.log(2) + 0.02 - math.log(1.02)) / 4
    assert kl.item() == pytest.approx(want_kl, abs=1e-12)
    assert kl.item() == pytest.approx(0.0719699, abs=1e-6)
    assert frac.item() == 0.5   # |r - 1| = 0.5 > 0.2 and 0.5 > 0.1


def test_ppo_loss_gradient_vanishes_outside_the_clip_range():
    logratio = torch.log(_t(1.5, 1.05)).view(1, 2).requires_grad_(True)
    loss, _, _ = ppo_clip_loss(logratio, _t(1.0, 1.0).view(1, 2), _t(0.2, 0.2))
    loss.backward()
    # clipped element: no gradient; unclipped: d(-r/2)/dlogr = -r/2
    assert logratio.grad.flatten().tolist() == pytest.approx([0.0, -1.05 / 2])


def test_normalize_advantages():
    a = normalize_advantages(_t(1.0, 2.0, 3.0))
    assert a.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-7)  # unbiased std = 1
    assert normalize_advantages(_t(5.0)).tolist() == [5.0]
