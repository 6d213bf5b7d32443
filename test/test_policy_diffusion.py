"""Diffusion arithmetic and the DPPO sampling API of the policy (real torch, tiny networks)."""
import math

import numpy as np
import pytest
import torch

from mechanic_rl_ros.policy import DiffusionPolicy, NoiseSchedule, PolicyConfig
from fixtures_policy import random_obs, tiny_config

torch.set_num_threads(1)


def _policy(seed=0, **kw):
    torch.manual_seed(seed)
    return DiffusionPolicy(tiny_config(**kw)).eval()


def test_squaredcos_schedule_and_uniform_timesteps():
    s = NoiseSchedule(100)
    # Nichol & Dhariwal 2021, Eq. 17 evaluated directly
    f = lambda t: math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 50, 98):
        assert s.abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert torch.all(s.abar[1:] < s.abar[:-1])
    assert s.step_params(10).timesteps.tolist() == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert s.step_params(3).timesteps.tolist() == [66, 33, 0]
    assert s.step_params(100).timesteps.tolist() == list(range(99, -1, -1))
    sp = s.step_params(10)
    assert sp.abar_prev[-1].item() == 1.0 and sp.ddim_sigma_unit[-1].item() == 0.0


def test_ddim_eta1_with_all_steps_is_the_ddpm_posterior():
    """Song et al. 2021, Sec. 4.1: eta = 1 over consecutive steps equals DDPM ancestral sampling."""
    from mechanic_rl_ros.policy.diffusion import ddim_mean_sigma

    s = NoiseSchedule(100)
    sp = s.step_params(100)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 16, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 16, 8, generator=g, dtype=torch.float64)
    for i in (0, 30, 70, 98):
        t = int(sp.timesteps[i])
        a, ap = s.abar[t], s.abar[t - 1]
        beta = 1 - a / ap
        mean, _ = ddim_mean_sigma(x_t, eps, a, ap, sp.ddim_sigma_unit[i], clip_x0=0)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        ddpm_mean = ap.sqrt() * beta / (1 - a) * x0 + (1 - beta).sqrt() * (1 - ap) / (1 - a) * x_t  # Ho et al. Eq. 7
        ddpm_var = (1 - ap) / (1 - a) * beta
        assert torch.allclose(mean, ddpm_mean, atol=1e-10)
        assert sp.ddim_sigma_unit[i].item() ** 2 == pytest.approx(ddpm_var.item(), rel=1e-10)


@pytest.mark.parametrize("cameras,prediction", [(("scene",), "sample"), ((), "sample"), ((), "epsilon"), ((), "v")])
def test_stochastic_logprobs_match_torch_normal(cameras, prediction):
    """Each step's log-prob equals Normal(mean, std).log_prob(x_next).sum() computed here from scratch."""
    cfg = tiny_config(cameras=cameras, state_only=not cameras)
    cfg.diffusion.prediction = prediction
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg).eval()
    obs = random_obs(cfg, 3)
    g = torch.Generator().manual_seed(1)
    out = policy.sample(obs, stochastic=True, generator=g)
    k = cfg.sampling.inference_steps
    assert out.chain.shape == (3, k + 1, cfg.pred_horizon, cfg.action_dim)
    assert out.logprobs.shape == (3, k)

    abar = NoiseSchedule(100).abar
    ts = out.timesteps.tolist()
    with torch.no_grad():
        cond = policy.encode(obs)
        for i, t in enumerate(ts):
            x_t, x_next = out.chain[:, i].double(), out.chain[:, i + 1].double()
            f = policy.net(out.chain[:, i], torch.full((3,), t), cond).double()
            a = abar[t]
            ap = abar[ts[i + 1]] if i + 1 < k else torch.tensor(1.0, dtype=torch.float64)
            x0 = {"epsilon": (x_t - (1 - a).sqrt() * f) / a.sqrt(), "sample": f,
                  "v": a.sqrt() * x_t - (1 - a).sqrt() * f}[prediction].clamp(-1, 1)
            eps_c = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
            sigma = cfg.sampling.eta * ((1 - ap) / (1 - a) * (1 - a / ap)).sqrt()
            mean = ap.sqrt() * x0 + (1 - ap - sigma ** 2).clamp_min(0).sqrt() * eps_c
            std = max(float(sigma), cfg.sampling.min_sampling_std, cfg.sampling.min_logprob_std)
            ref = torch.distributions.Normal(mean, std).log_prob(x_next).sum(dim=(-1, -2))
            assert torch.allclose(out.logprobs[:, i].double(), ref, rtol=1e-4, atol=1e-3), i
            # the sample really came from that Gaussian: the standardised residual is O(1)
            assert ((x_next - mean) / std).abs().max() < 6

    # recomputing with the same weights gives the same log-probabilities (PPO ratio 1)
    lp = policy.chain_log_prob(obs, out.chain)
    assert torch.allclose(lp, out.logprobs, rtol=1e-5, atol=1e-3)
    sub = policy.chain_log_prob(obs, out.chain, step_indices=[k - 1, 0])
    assert torch.allclose(sub, out.logprobs[:, [k - 1, 0]], rtol=1e-5, atol=1e-3)
    per_elem = policy.chain_log_prob(obs, out.chain, reduce=False)
    assert per_elem.shape == (3, k, cfg.pred_horizon, cfg.action_dim)


def test_actions_are_clipped_unnormalised_x0():
    policy = _policy()
    obs = random_obs(policy.cfg, 4)
    out = policy.sample(obs, stochastic=True, generator=torch.Generator().manual_seed(0))
    assert out.actions_norm.abs().max() <= 1.0
    assert torch.allclose(out.actions_norm, out.chain[:, -1].clamp(-1, 1))
    assert torch.allclose(policy.normalizer.action.normalize(out.actions), out.actions_norm, atol=1e-5)


def test_deterministic_ddim_is_reproducible_and_noise_free():
    policy = _policy()
    obs = random_obs(policy.cfg, 2)
    a = policy.sample(obs, stochastic=False, generator=torch.Generator().manual_seed(5))
    b = policy.sample(obs, stochastic=False, generator=torch.Generator().manual_seed(5))
    c = policy.sample(obs, stochastic=False, generator=torch.Generator().manual_seed(6))
    assert a.logprobs is None
    assert torch.equal(a.chain, b.chain) and not torch.equal(a.chain, c.chain)
    # x_K given explicitly -> same result
    d = policy.sample(obs, stochastic=False, x_init=a.chain[:, 0])
    assert torch.allclose(d.chain, a.chain)


def test_finetune_copy_runs_only_the_last_steps():
    policy = _policy()
    k, kp = policy.cfg.sampling.inference_steps, 3
    obs = random_obs(policy.cfg, 2)
    out0 = policy.sample(obs, stochastic=True, generator=torch.Generator().manual_seed(0))
    ft = policy.make_finetune_copy(kp)
    assert not any(p.requires_grad for p in policy.net.parameters())
    # an untouched copy changes nothing
    assert torch.allclose(policy.chain_log_prob(obs, out0.chain), out0.logprobs, atol=1e-3)
    with torch.no_grad():
        for p in ft.unet.final.parameters():
            p.add_(0.05)
    lp = policy.chain_log_prob(obs, out0.chain)
    early, late = slice(0, k - kp), slice(k - kp, k)
    assert torch.allclose(lp[:, early], out0.logprobs[:, early], atol=1e-3)
    assert not torch.allclose(lp[:, late], out0.logprobs[:, late], atol=1e-2)
    # gradients reach ft_net only
    lp[:, late].sum().backward()
    assert all(p.grad is None for p in policy.net.parameters())
    assert ft.unet.final[1].weight.grad is not None and ft.unet.final[1].weight.grad.abs().sum() > 0
    # sampling with the copy: the earlier steps are those of the frozen net
    out1 = policy.sample(obs, stochastic=True, generator=torch.Generator().manual_seed(0))
    assert out1.finetune_steps == kp
    assert torch.allclose(out1.chain[:, : k - kp + 1], out0.chain[:, : k - kp + 1])
    assert torch.allclose(policy.chain_log_prob(obs, out1.chain), out1.logprobs, atol=1e-3)
    # finetune_steps=0 override: everything from the pretrained net again
    out2 = policy.sample(obs, stochastic=True, generator=torch.Generator().manual_seed(0), finetune_steps=0)
    assert torch.allclose(out2.chain, out0.chain)


def test_ddpm_mode_and_noise_floor():
    policy = _policy()
    obs = random_obs(policy.cfg, 2)
    out = policy.sample(obs, stochastic=True, num_steps=100, generator=torch.Generator().manual_seed(0))
    assert out.chain.shape[1] == 101 and out.logprobs.shape == (2, 100)
    assert torch.allclose(policy.chain_log_prob(obs, out.chain, step_indices=[0, 50, 99]),
                          out.logprobs[:, [0, 50, 99]], atol=1e-3)
    # eta = 0 still explores with the DPPO floor std = 0.1 in every step
    out = policy.sample(obs, stochastic=True, eta=0.0, generator=torch.Generator().manual_seed(0))
    d = policy.cfg.pred_horizon * policy.cfg.action_dim
    max_lp = d * (-math.log(0.1) - 0.5 * math.log(2 * math.pi))
    assert torch.all(out.logprobs < max_lp)
    assert policy.chain_log_prob(obs, out.chain, eta=0.0).sub(out.logprobs).abs().max() < 1e-3


def test_default_config_shapes():
    cfg = PolicyConfig()
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg).eval()
    assert (cfg.obs_horizon, cfg.pred_horizon, cfg.action_horizon, cfg.sampling.inference_steps) == (2, 16, 8, 10)
    out = policy.sample(random_obs(cfg, 1), stochastic=False)
    assert out.actions.shape == (1, 16, 8)
    assert policy.executable(out.actions).shape == (1, 8, 8)
    assert np.isfinite(out.actions.numpy()).all()


def test_a_chunk_that_starts_later_executes_the_actions_for_its_instants():
    cfg = PolicyConfig()  # T_o 2, T_p 16, T_a 8: the action for the observation's instant is index 1
    policy = DiffusionPolicy(cfg)
    predicted = np.arange(16, dtype=np.float32)[None, :, None].repeat(8, axis=2)
    assert policy.executable(predicted)[0, :, 0].tolist() == list(range(1, 9))
    assert policy.executable(predicted, lead=2)[0, :, 0].tolist() == list(range(3, 11))
    assert cfg.max_lead == 7 and policy.executable(predicted, lead=7)[0, -1, 0] == 15
    for lead in (8, -1):
        with pytest.raises(ValueError, match=r"lead: .*expected 0\.\.7"):
            policy.executable(predicted, lead=lead)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_prediction_parameterisations_invert(prediction):
    from mechanic_rl_ros.policy.diffusion import split_prediction, training_target

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 16, 8, generator=g, dtype=torch.float64), torch.randn(5, 16, 8, generator=g,
                                                                                   dtype=torch.float64)
    abar = torch.linspace(0.05, 0.95, 5, dtype=torch.float64).view(-1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    x0_hat, eps_hat = split_prediction(x_t, training_target(x0, eps, abar, prediction), abar, prediction)
    assert torch.allclose(x0_hat, x0) and torch.allclose(eps_hat, eps)


def test_inference_mode_first_does_not_poison_later_training():
    """predict_chunk (inference mode) before any gradient computation must not cache inference tensors."""
    from mechanic_rl_ros.policy import PolicyNormalizer
    from mechanic_rl_ros.policy.dataset import synthetic_episodes

    cfg = tiny_config(state_only=True)
    eps = synthetic_episodes(2, 20, cameras=(), task_dim=13)
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg, PolicyNormalizer.fit(eps, cfg.lowdim_keys))
    obs = random_obs(cfg, 2)
    policy.predict_chunk({k: v[0] for k, v in obs.items()}, seed=0)
    out = policy.sample(obs, generator=torch.Generator().manual_seed(0))
    batch = dict(obs, action=torch.as_tensor(eps[0]["action"][None, :16]).repeat(2, 1, 1))
    policy.compute_loss(batch).backward()
    ft = policy.make_finetune_copy(2)
    policy.chain_log_prob(obs, out.chain).sum().backward()
    assert next(ft.parameters()).grad is not None


def test_noise_clip_bounds_the_draws_and_keeps_exact_logprobs():
    policy = _policy()
    obs = random_obs(policy.cfg, 4)
    a = policy.sample(obs, generator=torch.Generator().manual_seed(0), noise_clip=0.5)
    b = policy.sample(obs, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a.chain, b.chain)
    assert torch.allclose(policy.chain_log_prob(obs, a.chain), a.logprobs, atol=1e-3)
    # the last step's stds are the floors (DDIM sigma = 0 there): draws of at most 0.5 sampling stds,
    # scored by a Gaussian with the (larger or equal) log-prob std
    s = policy.cfg.sampling
    std_s, std_l = s.min_sampling_std, max(s.min_sampling_std, s.min_logprob_std)
    with torch.no_grad():
        prev = policy.chain_log_prob(obs, a.chain, step_indices=[9], reduce=False)
    z = 0.5 * std_s / std_l
    bound = -0.5 * z ** 2 - math.log(std_l) - 0.5 * math.log(2 * math.pi)
    assert prev.min() >= bound - 1e-4
