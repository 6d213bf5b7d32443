"""The diffusion visuomotor policy (Chi et al., RSS 2023) with the DPPO sampling API (Ren et al. 2024).

``DiffusionPolicy`` owns

* ``net`` -- a :class:`NoiseNet` (per-camera ResNet encoders + conditional
  1D U-Net), the pretrained eps_theta;
* ``ft_net`` -- optionally a second :class:`NoiseNet` of the same architecture
  that runs the last K' denoising steps (DPPO fine-tunes only those, the earlier
  steps keep the frozen pretrained network; Ren et al. 2024, Sec. 5.1);
* the normaliser (min/max to [-1, 1], fitted on the demonstrations) and the
  noise schedule.

Observations, batched: ``{"images": {cam: uint8[B, T_o, H, W, 3]}, key: float[B, T_o, d], ...}``
for every low-dim key of the config (numpy or torch).  Actions in real units:
``float[B, T_p, action_dim]``.  :class:`~mechanic_rl_ros.control.history.ObsHistory`
builds the unbatched ``[T_o, ...]`` form used by :meth:`DiffusionPolicy.predict_chunk`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointMismatchError, check_state_dict, read_checkpoint, write_checkpoint
from .config import PolicyConfig
from .diffusion import NoiseSchedule, ddim_mean_sigma, gaussian_log_prob, training_target
from .normalizer import PolicyNormalizer
from .unet import ConditionalUnet1D
from .vision import ResNetEncoder


def frame_features(encoder: nn.Module, frames: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    """``[B * T, feature_dim]``: one camera's ``encoder`` on its ``[B, T, H, W, 3]`` frames (uint8, or floats
    in [0, 1]), fed as an NCHW view of their NHWC memory (channels-last) or, ``contiguous``, as an NCHW copy."""
    x = torch.as_tensor(frames).flatten(0, 1).permute(0, 3, 1, 2)
    if contiguous:
        x = x.contiguous()
    return encoder(x.float().div(255.0) if x.dtype == torch.uint8 else x.float())


class NoiseNet(nn.Module):
    """eps_theta(x_k, k, O): observation encoder + conditional U-Net.

    The conditioning vector is the concatenation over the T_o observation
    frames of [camera features..., normalised low-dim obs] (Chi et al. 2023,
    Sec. III-B: observation features are computed once and reused by every
    denoising step, which is why :meth:`encode` is separate from :meth:`forward`).
    """

    #: feed images to the CNN in channels-last (NHWC) memory layout -- the layout they arrive in
    #: (measured faster on CPU, see docs/policy.md); False copies them to NCHW first
    channels_last: bool = True

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cameras = tuple(cfg.cameras)
        self.encoders = nn.ModuleDict({cam: ResNetEncoder(cfg.vision) for cam in self.cameras})
        per_frame = len(self.cameras) * cfg.vision.feature_dim + cfg.lowdim_dim
        self.cond_dim = cfg.obs_horizon * per_frame
        self.unet = ConditionalUnet1D(cfg.action_dim, self.cond_dim, cfg.unet)

    def encode(self, images: Mapping[str, torch.Tensor], lowdim: torch.Tensor | None) -> torch.Tensor:
        """images: {cam: uint8 or float[B, T_o, H, W, 3]} (uint8 or [0, 1]); lowdim: [B, T_o, D] normalised."""
        feats = []
        for cam in self.cameras:
            b, t = images[cam].shape[:2]
            feats.append(frame_features(self.encoders[cam], images[cam], not self.channels_last).view(b, t, -1))
        if lowdim is not None:
            feats.append(lowdim)
        return torch.cat(feats, dim=-1).flatten(1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, cond)

    def __getstate__(self) -> dict[str, Any]:
        """Without the parameters-by-name cache of :meth:`DiffusionPolicy._named_parameters` (a copy rebuilds it)."""
        state = super().__getstate__()
        state.pop("_params_by_name", None)
        return state


@dataclass
class DiffusionSample:
    """Result of :meth:`DiffusionPolicy.sample`.

    ``chain[:, 0]`` is x_K ~ N(0, I), ``chain[:, i + 1]`` the sample of step i,
    ``chain[:, -1]`` is x_0 (normalised, unclipped unless ``clip_chain``).
    ``logprobs[:, i]`` is log pi(chain[:, i+1] | chain[:, i], obs), summed over
    the T_p x A elements (None for deterministic sampling).
    """

    actions: torch.Tensor          #: [B, T_p, A] real units (clipped x_0, un-normalised)
    actions_norm: torch.Tensor     #: [B, T_p, A] in [-1, 1]
    chain: torch.Tensor            #: [B, K + 1, T_p, A]
    logprobs: torch.Tensor | None  #: [B, K]
    timesteps: torch.Tensor        #: [K] training-step index of each denoising step
    finetune_steps: int                  #: K', the last K' steps used ft_net

    def trained_chain(self) -> tuple[np.ndarray, np.ndarray]:
        """What a learner trains on: ``(chain, logprobs)`` of the fine-tuned steps, as numpy.

        ``chain`` float32 ``[B, n+1, T_p, A]`` (the input of the first of those
        steps to x_0) and ``logprobs`` float64 ``[B, n]``, with n = K' (all K
        steps when no step used ``ft_net``). A deterministic sample has no
        log-probabilities: both come back with n = 0.
        """
        if self.logprobs is None:
            b = self.chain.shape[0]
            return (np.zeros((b, 0, *self.chain.shape[2:]), np.float32), np.zeros((b, 0), np.float64))
        k = self.logprobs.shape[1]
        n = self.finetune_steps or k
        return (self.chain[:, k - n:].cpu().numpy().astype(np.float32),
                self.logprobs[:, k - n:].cpu().numpy().astype(np.float64))


def _as_tensor(x: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype or x.dtype)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift augmentation (Kostrikov et al., DrQ, ICLR 2021): replicate-pad by ``pad`` pixels
    and crop back to H x W at a random offset, the same offset for all T_o frames of a sample.

    images: [B, T, H, W, C] (any dtype); implemented as clamped index gathering (= replicate padding).
    """
    if pad <= 0:
        return images
    b, _, h, w, _ = images.shape
    dev = images.device
    off = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device="cpu").to(dev) - pad
    rows = (off[0][:, None] + torch.arange(h, device=dev)[None]).clamp(0, h - 1)  # [B, H]
    cols = (off[1][:, None] + torch.arange(w, device=dev)[None]).clamp(0, w - 1)  # [B, W]
    bi = torch.arange(b, device=dev)[:, None, None]
    out = images[bi, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, T, C]
    return out.permute(0, 3, 1, 2, 4)


class DiffusionPolicy(nn.Module):
    """Diffusion Policy with DDIM inference and DPPO-style stochastic sampling.

    Main entry points: :meth:`predict_chunk` (one observation history, real
    units, deterministic DDIM), :meth:`sample` (batched, stochastic, returns
    the denoising chain and per-step log-probabilities), :meth:`chain_log_prob`
    (re-evaluates the log-probabilities of a stored chain under the current
    weights, with gradients), :meth:`compute_loss` (DDPM training loss),
    :meth:`save` / :meth:`from_checkpoint`, and the weight-bytes helpers.
    Partial weights (a distillation learner's layers) go in with :meth:`load_partial`, or double-buffered with
    :meth:`stage_partial` and :meth:`swap_standby`.
    """

    def __init__(self, cfg: PolicyConfig, normalizer: PolicyNormalizer | None = None):
        super().__init__()
        self.cfg = cfg.validate()
        self.normalizer = normalizer or PolicyNormalizer.identity(cfg.action_dim,
                                                                  {k: cfg.lowdim_dims[k] for k in cfg.lowdim_keys})
        self.net = NoiseNet(cfg)
        self.ft_net: NoiseNet | None = None
        self.schedule = NoiseSchedule(cfg.diffusion.train_steps, cfg.diffusion.beta_max)
        self.train_info: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Without the standby network of :meth:`stage_partial` (a copy, or a policy pickled into a planner
        process, builds its own at its first staging)."""
        state = super().__getstate__()
        state.pop("_standby", None)
        return state

    # ------------------------------------------------------------------ basics
    @property
    def arch_id(self) -> str:
        return self.cfg.arch_id

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, module: nn.Module | None = None) -> int:
        return sum(p.numel() for p in (module or self.net).parameters())

    def make_finetune_copy(self, finetune_steps: int) -> NoiseNet:
        """Create ``ft_net`` (a trainable copy of ``net``) for the last ``finetune_steps`` denoising steps.

        The pretrained ``net`` is frozen (``requires_grad=False``); returns ``ft_net``.
        """
        if not 0 < finetune_steps <= self.cfg.sampling.inference_steps:
            raise ValueError(f"finetune_steps must be in [1, {self.cfg.sampling.inference_steps}]")
        self.ft_net = copy.deepcopy(self.net)
        self.ft_net.requires_grad_(True)
        self.net.requires_grad_(False)
        self.cfg.sampling.finetune_steps = int(finetune_steps)
        return self.ft_net

    # ------------------------------------------------------------- observations
    def prepare_obs(self, obs: Mapping[str, Any], augment_pad: int = 0,
                    generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Batched raw obs -> (images {cam: uint8[B, T_o, H, W, 3]}, normalised low-dim [B, T_o, D])."""
        dev = self.device
        images = {}
        for cam in self.cfg.cameras:
            img = _as_tensor(obs["images"][cam], dev)
            if img.dim() != 5 or img.shape[1] != self.cfg.obs_horizon:
                raise ValueError(f"images[{cam!r}] must be [B, T_o={self.cfg.obs_horizon}, H, W, 3], "
                                 f"got {tuple(img.shape)}")
            images[cam] = random_shift(img, augment_pad, generator)
        lowdim = None
        if self.cfg.lowdim_keys:
            parts = [self.normalizer.lowdim[k].normalize(_as_tensor(obs[k], dev, torch.float32))
                     for k in self.cfg.lowdim_keys]
            lowdim = torch.cat(parts, dim=-1)
            if lowdim.dim() != 3 or lowdim.shape[1] != self.cfg.obs_horizon:
                raise ValueError(f"low-dim obs must be [B, T_o={self.cfg.obs_horizon}, d], got {tuple(lowdim.shape)}")
        return images, lowdim

    def encode(self, obs: Mapping[str, Any], net: NoiseNet | None = None) -> torch.Tensor:
        """Conditioning vector [B, cond_dim] of ``net`` (default: the pretrained net)."""
        images, lowdim = self.prepare_obs(obs)
        return (net or self.net).encode(images, lowdim)

    # ----------------------------------------------------------------- training
    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None,
                     augment_pad: int = 0, net: NoiseNet | None = None) -> torch.Tensor:
        """DDPM simple loss E_{t, eps} ||target - f_theta(x_t, t, O)||^2 (Ho et al. 2020, Eq. 14).

        target = eps, x0 or v according to ``diffusion.prediction`` (see :mod:`.diffusion`).

        ``batch`` holds the observations plus ``"action": [B, T_p, A]`` in real units.
        """
        net = net or self.net
        images, lowdim = self.prepare_obs(batch, augment_pad, generator)
        cond = net.encode(images, lowdim)
        a = self.normalizer.action.normalize(_as_tensor(batch["action"], self.device, torch.float32))
        t = torch.randint(0, self.schedule.train_steps, (a.shape[0],), generator=generator).to(a.device)
        eps = torch.randn(a.shape, generator=generator, dtype=a.dtype).to(a.device)
        abar = self.schedule.abar_at(t, a.dtype).view(-1, 1, 1)
        target = training_target(a, eps, abar, self.cfg.diffusion.prediction)
        return F.mse_loss(net(self.schedule.add_noise(a, eps, t), t, cond), target)

    # ----------------------------------------------------------------- sampling
    def _resolve_ft(self, finetune_steps: int | None, k: int) -> int:
        if self.ft_net is None:
            if finetune_steps:
                raise ValueError("finetune_steps > 0 but the policy has no ft_net (call make_finetune_copy)")
            return 0
        n = self.cfg.sampling.finetune_steps if finetune_steps is None else int(finetune_steps)
        if not 0 <= n <= k:
            raise ValueError(f"finetune_steps={n} must be in [0, K={k}]")
        return n

    def _stds(self, sigma_unit: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(DDIM sigma, sampling std, log-prob std) per step, float64 [K]."""
        s = self.cfg.sampling
        sigma = eta * sigma_unit
        std = sigma.clamp_min(s.min_sampling_std)
        return sigma, std, std.clamp_min(s.min_logprob_std)

    @torch.no_grad()
    def sample(self, obs: Mapping[str, Any], *, stochastic: bool = True, num_steps: int | None = None,
               eta: float | None = None, generator: torch.Generator | None = None,
               x_init: torch.Tensor | None = None, finetune_steps: int | None = None,
               noise_clip: float | None = None, cond: torch.Tensor | None = None) -> DiffusionSample:
        """Denoise K steps from x_K ~ N(0, I) for a batch of observations.

        stochastic=True: DPPO sampling, x_prev ~ N(mean_i, std_i^2) with the
        DDIM mean (noise ``eta``, default ``sampling.eta``) and
        std_i = max(eta sigma_i, min_sampling_std); returns exact per-step
        Gaussian log-probabilities (std floored at ``min_logprob_std``).
        stochastic=False: plain DDIM (``eta`` default 0), x_prev = mean_i, no log-probs.
        ``noise_clip`` (default ``sampling.noise_clip``; 0 = off) clips each
        standard-normal draw to [-c, c] as DPPO does (randn_clip_value = 3); the
        log-probabilities stay those of the unclipped Gaussian at the sampled point.
        The last ``finetune_steps`` (default ``sampling.finetune_steps``) use ``ft_net``.
        The observation features are computed once per call and shared by all steps; ``cond``
        (the pretrained net's features, :meth:`encode`) skips that and ``obs`` is not read (no
        ``ft_net`` steps then), so many initial noises can be denoised from one encoding.
        """
        s = self.cfg.sampling
        k = int(num_steps or s.inference_steps)
        eta = float(eta if eta is not None else (s.eta if stochastic else 0.0))
        n_ft = self._resolve_ft(finetune_steps, k)
        sp = self.schedule.step_params(k)
        sigma, std, lp_std = self._stds(sp.ddim_sigma_unit, eta)
        if cond is not None:
            if n_ft > 0:
                raise ValueError("sample(cond=...) takes the pretrained net's features; finetune_steps must be 0")
            cond_base, cond_ft = cond.to(self.device, torch.float32), None
        else:
            images, lowdim = self.prepare_obs(obs)
            cond_base = self.net.encode(images, lowdim) if n_ft < k else None
            cond_ft = self.ft_net.encode(images, lowdim) if n_ft > 0 else None  # type: ignore[union-attr]
        b = (cond_base if cond_base is not None else cond_ft).shape[0]  # type: ignore[union-attr]
        dev, dt = self.device, torch.float32
        shape = (b, self.cfg.pred_horizon, self.cfg.action_dim)
        x = (torch.randn(shape, generator=generator, dtype=dt).to(dev) if x_init is None
             else x_init.to(device=dev, dtype=dt))
        chain, logps = [x], []
        clip = s.clip_action
        zclip = float(s.noise_clip if noise_clip is None else noise_clip)
        zclip = zclip if zclip > 0 and math.isfinite(zclip) else 0.0
        for i in range(k):
            use_ft = i >= k - n_ft
            net, cond = (self.ft_net, cond_ft) if use_ft else (self.net, cond_base)
            t = sp.timesteps[i].to(dev).expand(b)
            eps = net(x, t, cond)  # type: ignore[misc]
            c = [v[i].to(device=dev, dtype=dt) for v in (sp.abar, sp.abar_prev, sigma, std, lp_std)]
            mean, _ = ddim_mean_sigma(x, eps, c[0], c[1], c[2], s.clip_x0, self.cfg.diffusion.prediction)
            if stochastic:
                z = torch.randn(shape, generator=generator, dtype=dt).to(dev)
                if zclip:
                    z = z.clamp(-zclip, zclip)
                x = mean + c[3] * z
                if s.clip_chain and clip > 0:
                    x = x.clamp(-clip, clip)
                logps.append(gaussian_log_prob(x, mean, c[4]).sum(dim=(-1, -2)))
            else:
                x = mean
            chain.append(x)
        x0 = x.clamp(-clip, clip) if clip > 0 else x
        return DiffusionSample(actions=self.normalizer.action.unnormalize(x0), actions_norm=x0,
                               chain=torch.stack(chain, dim=1),
                               logprobs=torch.stack(logps, dim=1) if stochastic else None,
                               timesteps=sp.timesteps.clone(), finetune_steps=n_ft)

    def chain_log_prob(self, obs: Mapping[str, Any], chain: torch.Tensor, *,
                       step_indices: Sequence[int] | None = None, eta: float | None = None,
                       finetune_steps: int | None = None, reduce: bool = True) -> torch.Tensor:
        """log pi(chain[:, i+1] | chain[:, i], obs) under the *current* weights, with gradients.

        ``chain``: [B, K+1, T_p, A] from :meth:`sample` (K is inferred from it).
        ``step_indices``: steps to evaluate (default: all K); all selected steps
        of one network are evaluated in a single batched forward pass.  Steps
        i >= K - finetune_steps use ``ft_net``, the others the (frozen) ``net``.
        Returns [B, len(step_indices)] (or [B, n, T_p, A] with ``reduce=False``),
        the PPO numerator of the DPPO importance ratio (Ren et al. 2024, Eq. 6).
        """
        s = self.cfg.sampling
        k = chain.shape[1] - 1
        eta = float(s.eta if eta is None else eta)
        n_ft = self._resolve_ft(finetune_steps, k)
        idx = list(range(k)) if step_indices is None else [int(i) for i in step_indices]
        if any(not 0 <= i < k for i in idx):
            raise ValueError(f"step_indices must be in [0, {k})")
        sp = self.schedule.step_params(k)
        sigma, _, lp_std = self._stds(sp.ddim_sigma_unit, eta)
        dev, dt = self.device, torch.float32
        chain = chain.to(device=dev, dtype=dt)
        b = chain.shape[0]
        images, lowdim = self.prepare_obs(obs)
        out: dict[int, torch.Tensor] = {}
        for use_ft in (False, True):
            sel = [i for i in idx if (i >= k - n_ft) == use_ft]
            if not sel:
                continue
            net = self.ft_net if use_ft else self.net
            cond = net.encode(images, lowdim)  # type: ignore[union-attr]
            n = len(sel)
            sel_t = torch.tensor(sel, device=dev)
            x_t = chain[:, sel_t].flatten(0, 1)                       # [B*n, T, A], row = b*n + j
            x_next = chain[:, sel_t + 1].flatten(0, 1)
            t = sp.timesteps[sel].to(dev).repeat(b)
            eps = net(x_t, t, cond.repeat_interleave(n, dim=0))  # type: ignore[misc]

            def per_row(v: torch.Tensor) -> torch.Tensor:
                return v[sel].to(device=dev, dtype=dt).repeat(b).view(-1, 1, 1)
            mean, _ = ddim_mean_sigma(x_t, eps, per_row(sp.abar), per_row(sp.abar_prev), per_row(sigma), s.clip_x0,
                                      self.cfg.diffusion.prediction)
            lp = gaussian_log_prob(x_next, mean, per_row(lp_std)).view(b, n, *chain.shape[2:])
            for j, i in enumerate(sel):
                out[i] = lp[:, j]
        lp_all = torch.stack([out[i] for i in idx], dim=1)
        return lp_all.sum(dim=(-1, -2)) if reduce else lp_all

    # ------------------------------------------------------- single-obs helpers
    def batch_single(self, obs_history: Mapping[str, Any]) -> dict[str, Any]:
        """Add the batch dimension to an unbatched ``[T_o, ...]`` observation history."""
        out: dict[str, Any] = {}
        if self.cfg.cameras:
            out["images"] = {c: _as_tensor(obs_history["images"][c], self.device)[None] for c in self.cfg.cameras}
        for k in self.cfg.lowdim_keys:
            out[k] = _as_tensor(obs_history[k], self.device, torch.float32)[None]
        return out

    def warm_up(self, proposals: int = 0) -> float:
        """The node's own inference call once on an all-zero history, discarded; returns its wall time [s].

        torch's first call runs its lazy set-up (seconds on a loaded machine); a node pays it before it
        acts, not on its first control tick. ``proposals`` = 0: one stochastic sample (DPPO's call);
        ``proposals`` > 0: one deterministic batch of that many from one encoding, the call value-guided
        selection makes. No generator is shared with real sampling.
        """
        T, S = self.cfg.obs_horizon, self.cfg.image_size
        hist: dict[str, Any] = {k: np.zeros((T, self.cfg.lowdim_dims[k]), np.float32) for k in self.cfg.lowdim_keys}
        if self.cfg.cameras:
            hist["images"] = {c: np.zeros((T, S, S, 3), np.uint8) for c in self.cfg.cameras}
        start = time.perf_counter()
        with torch.inference_mode():
            if proposals <= 0:
                self.sample(self.batch_single(hist), stochastic=True, generator=torch.Generator().manual_seed(0))
            else:
                cond = self.encode(self.batch_single(hist)).expand(proposals, -1)
                x = torch.randn((proposals, self.cfg.pred_horizon, self.cfg.action_dim),
                                generator=torch.Generator().manual_seed(0))
                self.sample(None, stochastic=False, x_init=x, cond=cond)
        return time.perf_counter() - start

    def predict_chunk(self, obs_history: Mapping[str, Any], *, generator: torch.Generator | None = None,
                      seed: int | None = None, stochastic: bool = False,
                      noise_clip: float | None = None) -> np.ndarray:
        """Predict T_p actions (real units, float32[T_p, A]) from one history of T_o observations.

        Deterministic DDIM with K = ``sampling.inference_steps`` unless
        ``stochastic`` (the DPPO sampler of :meth:`sample`, with ``noise_clip``);
        ``seed`` (or ``generator``) fixes the draws.  Actions
        [T_o - 1, T_o - 1 + T_a) are the ones to execute (:meth:`executable`).
        """
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            out = self.sample(self.batch_single(obs_history), stochastic=stochastic, generator=generator,
                              noise_clip=noise_clip)
        return out.actions[0].cpu().numpy().astype(np.float32)

    def executable(self, actions: np.ndarray | torch.Tensor, lead: int = 0) -> Any:
        """The T_a actions of a predicted chunk to execute: indices [T_o - 1, T_o - 1 + T_a) of axis -2.

        Index T_o - 1 is the action for the instant of the newest observation
        (Chi et al.). A chunk that starts ``lead`` control periods after its
        observation (planned while the previous chunk still runs) executes
        [T_o - 1 + lead, T_o - 1 + lead + T_a): each action at the instant it
        was predicted for. ``lead`` is at most :attr:`PolicyConfig.max_lead`.
        """
        if not 0 <= lead <= self.cfg.max_lead:
            raise ValueError(f"lead: {lead} control periods; expected 0..{self.cfg.max_lead} "
                             f"(T_p - T_o + 1 - T_a of this policy)")
        a0 = self.cfg.action_start + int(lead)
        return actions[..., a0:a0 + self.cfg.action_horizon, :]

    def tail(self, actions: np.ndarray | torch.Tensor, lead: int = 0) -> Any:
        """The predicted actions after :meth:`executable` 's (same ``lead``): indices from
        T_o - 1 + lead + T_a to T_p of axis -2, for the instants after the chunk; the policy node runs them
        only while the next chunk is late (:class:`~mechanic_rl_ros.control.chunk_loop.ChunkLoop`)."""
        return actions[..., self.cfg.action_start + int(lead) + self.cfg.action_horizon:, :]

    def predict_action(self, obs_history: Mapping[str, Any], **kw: Any) -> np.ndarray:
        """``executable(predict_chunk(obs_history))``: float32[T_a, A] in real units."""
        return self.executable(self.predict_chunk(obs_history, **kw))

    # ------------------------------------------------------------- checkpoints
    def checkpoint_config(self) -> dict[str, Any]:
        return {"arch_id": self.arch_id, "policy": self.cfg.to_dict(), "normalizer": self.normalizer.to_dict(),
                "has_ft_net": self.ft_net is not None, "train_info": self.train_info}

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (see :mod:`.checkpoint`)."""
        return write_checkpoint(directory, self.state_dict(), self.checkpoint_config())

    @classmethod
    def from_checkpoint(cls, directory: str | Path, *, expected_arch_id: str | None = None,
                        map_location: str | torch.device = "cpu") -> "DiffusionPolicy":
        """Rebuild a policy from a checkpoint directory, checking the architecture id and all tensor shapes."""
        config, state, meta = read_checkpoint(directory)
        cfg = PolicyConfig.from_dict(config["policy"])
        ids = {"recomputed from config.json": cfg.arch_id, "config.json arch_id": config.get("arch_id"),
               "safetensors metadata": meta.get("arch_id")}
        if expected_arch_id is not None:
            ids["expected by caller"] = expected_arch_id
        policy = cls(cfg, PolicyNormalizer.from_dict(config["normalizer"]))
        if config.get("has_ft_net"):
            policy.ft_net = copy.deepcopy(policy.net)
            policy.net.requires_grad_(False)
        distinct = {v for v in ids.values() if v is not None}
        try:
            check_state_dict(policy.state_dict(), state, source=f"checkpoint {directory}")
        except CheckpointMismatchError as e:
            if len(distinct) > 1:
                raise CheckpointMismatchError(f"architecture ids differ: {ids}\n{e}") from None
            raise
        if len(distinct) > 1:
            raise CheckpointMismatchError(f"checkpoint {directory}: architecture ids differ: {ids}")
        policy.load_state_dict(state, strict=True)
        policy.train_info = dict(config.get("train_info") or {})
        return policy.to(map_location)

    def load_checkpoint_weights(self, directory: str | Path) -> None:
        """Load a checkpoint's ``net`` weights into this (already built) policy, checking id and shapes."""
        config, state, _ = read_checkpoint(directory)
        net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        check_state_dict(self.net.state_dict(), net_state, expected_arch_id=self.arch_id,
                         got_arch_id=config.get("arch_id"), source=f"checkpoint {directory}")
        self.net.load_state_dict(net_state, strict=True)

    # ------------------------------------------------- fine-tuned network
    def load_finetuned(self, tensors: Mapping[str, Any], finetune_steps: int | None = None) -> None:
        """Load verified weights (name -> array or tensor) into ``ft_net``, creating it when absent.

        ``finetune_steps`` (K', from the weights' metadata) must equal the
        policy's when it already has an ``ft_net``; a policy without one
        takes it. Every tensor's name, shape and dtype is checked first
        (:class:`CheckpointMismatchError` lists all differences).
        """
        state = {k: v if isinstance(v, torch.Tensor) else torch.tensor(np.asarray(v)) for k, v in tensors.items()}
        check_state_dict(self.net.state_dict(), state, source="fine-tuned weights")
        if self.ft_net is None:
            if finetune_steps is None:
                raise CheckpointMismatchError("fine-tuned weights without finetune_steps for a policy that has no "
                                              "fine-tuned network: for how many denoising steps are they?")
            self.make_finetune_copy(int(finetune_steps))
        elif finetune_steps is not None and int(finetune_steps) != self.cfg.sampling.finetune_steps:
            raise CheckpointMismatchError(f"weights fine-tuned for the last {finetune_steps} denoising steps; this "
                                          f"policy runs finetune_steps = {self.cfg.sampling.finetune_steps}")
        self.ft_net.load_state_dict(state, strict=True)  # type: ignore[union-attr]

    def check_partial(self, tensors: Mapping[str, Any], adopt: bool = False) -> dict[str, torch.Tensor]:
        """``tensors`` (name -> array or tensor, e.g. the layers a distillation learner trains) as torch
        tensors, checked against ``net``: every name one of its parameters with the same shape and dtype (and,
        to be ``adopt``-ed, contiguous, without autograd or inference-mode state). The first mismatch raises
        :class:`CheckpointMismatchError` naming the tensor. Done apart from :meth:`load_partial` or
        :meth:`stage_partial` (``checked=True``) by a caller that checks weights before it hands them on."""
        params = self._named_parameters()
        state = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v)) for k, v in tensors.items()}
        if not state:
            raise CheckpointMismatchError("partial weights: no tensor")
        for k, v in state.items():
            p = params.get(k)
            if p is None:
                raise CheckpointMismatchError(f"partial weights: {k!r} is not a parameter of this policy network")
            if v.shape != p.shape or v.dtype != p.dtype:
                raise CheckpointMismatchError(f"partial weights: {k!r} is {v.dtype} {list(v.shape)}; expected "
                                              f"{p.dtype} {list(p.shape)}")
            if adopt and (not v.is_contiguous() or v.requires_grad or v.is_inference()):
                raise CheckpointMismatchError(f"partial weights: {k!r} cannot be adopted (a contiguous tensor "
                                              f"without autograd or inference-mode state is expected)")
        return state

    def load_partial(self, tensors: Mapping[str, Any], adopt: bool = False, checked: bool = False) -> None:
        """Put weights of a part of ``net`` into it, after :meth:`check_partial` (nothing changes when it
        raises); ``checked``: ``tensors`` is what :meth:`check_partial` returned.

        By default the values are copied (one batched copy). With ``adopt`` the parameters take the given
        tensors themselves (no copy), for a caller that made them for this purpose and keeps no reference.
        Either way ``net`` changes in place, so this is for a caller that does not run inference meanwhile
        (a headless trainer between two rounds); a policy that serves inference on one thread while weights
        arrive on another stages them with :meth:`stage_partial` and swaps with :meth:`swap_standby`."""
        state = dict(tensors) if checked else self.check_partial(tensors, adopt)
        params = self._named_parameters()
        with torch.no_grad():
            if adopt:
                for k, v in state.items():
                    params[k].data = v
            else:
                torch._foreach_copy_([params[k] for k in state], list(state.values()))

    # ------------------------------------------------- double buffering of partial weights
    def make_standby(self, names: Iterable[str]) -> NoiseNet:
        """A standby copy of ``net`` whose parameters ``names`` are tensors of its own (with ``net``'s values)
        and whose every other parameter, and every buffer, is the very object of ``net``: the second buffer of
        :meth:`stage_partial`, as large as those parameters alone. :class:`CheckpointMismatchError` for a name
        that is not one of ``net``'s parameters."""
        params = self._named_parameters()
        own = set(names)
        unknown = sorted(own - set(params))
        if unknown:
            raise CheckpointMismatchError(f"partial weights: {unknown[0]!r} is not a parameter of this policy network")
        memo: dict[int, Any] = {id(p): p for k, p in params.items() if k not in own}
        memo.update({id(b): b for b in self.net.buffers()})
        standby = copy.deepcopy(self.net, memo)
        standby.__dict__.pop("_params_by_name", None)
        return standby

    def stage_partial(self, tensors: Mapping[str, Any], checked: bool = False) -> None:
        """Write weights of a part of ``net`` into the standby network, for :meth:`swap_standby` to put in
        service; ``net`` itself does not change. Checked as :meth:`check_partial` does (``checked``: ``tensors``
        is what it returned) before anything is written: nothing changes when it raises.

        Double buffering: the standby is a copy of ``net`` whose parameters named in ``tensors`` are its own
        and whose others are ``net``'s (:meth:`make_standby`; built at the first staging and again when a
        staging names another set of parameters). The copy of the values happens here, on the caller's thread
        (a weights thread) while ``net`` serves inference on another; the swap between two chunks then only
        exchanges two references. A second staging before a swap writes over the first. The caller keeps this
        method and :meth:`swap_standby` apart and swaps on the thread that runs inference, between two calls
        (:class:`~mechanic_rl_ros.policy.planner.PolicyPlanner`: its lock, its planning thread). The standby
        takes ``net``'s train/eval mode at each staging; a policy is moved (``to``) before its first staging."""
        state = dict(tensors) if checked else self.check_partial(tensors)
        names = frozenset(state)
        standby = self.__dict__.get("_standby")
        if standby is None or standby[1] != names:
            standby = self._standby = (self.make_standby(names), names)
        net = standby[0]
        if net.training != self.net.training:
            net.train(self.net.training)
        params = self._named_parameters(net)
        with torch.no_grad():
            torch._foreach_copy_([params[k] for k in state], list(state.values()))

    def swap_standby(self) -> None:
        """Put the standby network written by :meth:`stage_partial` in service as ``net``; the network that was
        ``net`` becomes the standby (its own parameters are the same names), which the next staging writes.
        Two reference assignments, no copy. RuntimeError when nothing was ever staged."""
        state = self.__dict__
        standby = state.get("_standby")
        if standby is None:
            raise RuntimeError("swap_standby: no standby network (nothing staged with stage_partial)")
        # the two entries themselves (what ``self._standby = ...`` and ``self.net = ...`` set, without
        # nn.Module.__setattr__'s checks: a fraction of a microsecond instead of a few)
        state["_standby"] = (self._modules["net"], standby[1])
        self._modules["net"] = standby[0]

    def standby_net(self) -> NoiseNet | None:
        """The standby network of :meth:`stage_partial` (None before the first staging)."""
        standby = self.__dict__.get("_standby")
        return None if standby is None else standby[0]

    def _named_parameters(self, net: NoiseNet | None = None) -> dict[str, torch.nn.Parameter]:
        """The parameters of ``net`` (default: the policy's ``net``) by name, built once per network (its
        structure never changes) and kept on that network, so that the active network's and the standby's
        (:meth:`stage_partial`) are never confused whichever of the two is ``net``."""
        net = self.net if net is None else net
        cached = net.__dict__.get("_params_by_name")
        if cached is None or next(iter(cached.values())) is not next(net.parameters()):
            cached = net.__dict__["_params_by_name"] = dict(net.named_parameters())
        return cached
