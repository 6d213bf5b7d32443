"""Inference latency of the diffusion policy on CPU: one chunk = encode T_o frames + K denoising steps.

Usage::

    .venv/bin/python bench/bench_policy_latency.py                 # default config, 2 threads, 200 calls
    .venv/bin/python bench/bench_policy_latency.py --checkpoint checkpoints/lift_pretrained --json out.json
    .venv/bin/python bench/bench_policy_latency.py --quick          # fewer calls, no scaling sweeps

Prints (and optionally writes as JSON): parameter counts; median / p99 latency
of ``DiffusionPolicy.predict_chunk`` over >= 200 calls for the default config;
the split into encoder and per-step U-Net time; the effect of each measure
taken (inference mode vs autograd, encoding once per chunk vs once per step,
channels-last images, the GEMM temporal convolution, ``torch.compile``); and
how latency scales with K and with the image size.  Latency does not depend
on the weight values, so random weights are used unless ``--checkpoint`` is given.
The machine is shared: the 1-minute load average is printed with every row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechanic_rl_ros.control.history import ObsHistory  # noqa: E402
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyConfig  # noqa: E402
from mechanic_rl_ros.policy.unet import TemporalConv1d  # noqa: E402


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def make_history(cfg: PolicyConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    h = ObsHistory(cfg.obs_horizon, cfg.cameras, cfg.lowdim_keys)
    for _ in range(cfg.obs_horizon):
        obs = {k: rng.normal(size=cfg.lowdim_dims[k]).astype(np.float32) for k in cfg.lowdim_keys}
        obs["images"] = {c: rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
                         for c in cfg.cameras}
        h.push(obs)
    return h.stacked()


def timeit(fn, calls: int, warmup: int = 10) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ms = np.asarray(ts) * 1e3
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "calls": calls, "load1": loadavg()}


def row(name: str, r: dict) -> None:
    print(f"  {name:<52s} median {r['median_ms']:7.1f} ms   p99 {r['p99_ms']:7.1f} ms   "
          f"(n={r['calls']}, load {r['load1']:.1f})", flush=True)


def naive_chunk(policy: DiffusionPolicy, hist: dict, k: int) -> None:
    """Baseline without the reuse: the observation encoder runs again at every denoising step."""
    from mechanic_rl_ros.policy.diffusion import ddim_mean_sigma

    obs = policy.batch_single(hist)
    sp = policy.schedule.step_params(k)
    x = torch.randn(1, policy.cfg.pred_horizon, policy.cfg.action_dim)
    for i in range(k):
        cond = policy.encode(obs)
        out = policy.net(x, sp.timesteps[i].expand(1), cond)
        x, _ = ddim_mean_sigma(x, out, sp.abar[i].float(), sp.abar_prev[i].float(), torch.tensor(0.0), 1.0,
                               policy.cfg.diffusion.prediction)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=200, help="calls for the headline median / p99")
    ap.add_argument("--sweep-calls", type=int, default=40, help="calls per point of the ablations and sweeps")
    ap.add_argument("--quick", action="store_true", help="headline figure only")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    ap.add_argument("--json", default=None, help="write all figures to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res: dict = {"threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count()}

    policy = (DiffusionPolicy.from_checkpoint(args.checkpoint) if args.checkpoint
              else DiffusionPolicy(PolicyConfig())).eval()
    cfg = policy.cfg
    hist = make_history(cfg)
    n_enc = sum(p.numel() for p in policy.net.encoders.parameters())
    n_unet = sum(p.numel() for p in policy.net.unet.parameters())
    res["params"] = {"total": n_enc + n_unet, "vision_encoders": n_enc, "unet": n_unet}
    res["config"] = {"cameras": list(cfg.cameras), "image_size": cfg.image_size, "T_o": cfg.obs_horizon,
                     "T_p": cfg.pred_horizon, "K": cfg.sampling.inference_steps, "arch_id": cfg.arch_id,
                     "vision_width": cfg.vision.base_width, "unet_dims": list(cfg.unet.down_dims)}
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; config {res['config']}")
    print(f"parameters: total {res['params']['total'] / 1e6:.2f} M (vision {n_enc / 1e6:.2f} M, "
          f"U-Net {n_unet / 1e6:.2f} M)")

    print(f"headline: predict_chunk (deterministic DDIM, K={cfg.sampling.inference_steps}), {args.calls} calls")
    res["headline"] = timeit(lambda: policy.predict_chunk(hist, seed=0), args.calls)
    row("predict_chunk", res["headline"])
    if args.quick:
        return _finish(res, args)

    n = args.sweep_calls
    obs = policy.batch_single(hist)
    with torch.inference_mode():
        cond = policy.encode(obs)
        x = torch.randn(1, cfg.pred_horizon, cfg.action_dim)
        t = torch.tensor([50])
        print("breakdown (inference mode)")
        res["encode"] = timeit(lambda: policy.encode(obs), n)
        row(f"encode T_o={cfg.obs_horizon} frames (+ normalise)", res["encode"])
        res["unet_step"] = timeit(lambda: policy.net(x, t, cond), n * 5)
        row("one U-Net denoising step", res["unet_step"])

    print("measures (each row changes one thing w.r.t. the headline)")
    res["ablations"] = {}

    def abl(name: str, fn) -> None:
        res["ablations"][name] = timeit(fn, n)
        row(name, res["ablations"][name])

    def no_inference_mode() -> None:
        with torch.no_grad():
            policy.sample(policy.batch_single(hist), stochastic=False, generator=torch.Generator().manual_seed(0))

    def with_autograd() -> None:
        policy.sample.__wrapped__(policy, policy.batch_single(hist), stochastic=False,  # type: ignore[attr-defined]
                                  generator=torch.Generator().manual_seed(0))

    abl("torch.no_grad instead of inference_mode", no_inference_mode)
    abl("autograd enabled (no no_grad / inference_mode)", with_autograd)
    with torch.inference_mode():
        abl("encoder re-run at every denoising step", lambda: naive_chunk(policy, hist, cfg.sampling.inference_steps))
    policy.net.channels_last = False
    abl("images copied to NCHW (no channels-last)", lambda: policy.predict_chunk(hist, seed=0))
    policy.net.channels_last = True
    policy.net.encoders.to(memory_format=torch.channels_last)
    abl("encoder weights also channels-last", lambda: policy.predict_chunk(hist, seed=0))
    policy.net.encoders.to(memory_format=torch.contiguous_format)
    saved = TemporalConv1d.GEMM_MIN_CHANNELS
    TemporalConv1d.GEMM_MIN_CHANNELS = 1 << 30
    abl("native conv1d instead of the GEMM temporal conv", lambda: policy.predict_chunk(hist, seed=0))
    TemporalConv1d.GEMM_MIN_CHANNELS = saved
    torch.set_num_threads(1)
    abl("1 thread instead of 2", lambda: policy.predict_chunk(hist, seed=0))
    torch.set_num_threads(args.threads)
    if args.compile:
        t0 = time.time()
        compiled = torch.compile(policy.net.unet)
        orig = policy.net.unet
        policy.net.unet = compiled  # type: ignore[assignment]
        policy.predict_chunk(hist, seed=0)
        res["compile_time_s"] = time.time() - t0
        abl(f"torch.compile(unet) (compile took {res['compile_time_s']:.0f} s)",
            lambda: policy.predict_chunk(hist, seed=0))
        policy.net.unet = orig

    print("scaling with K (DDIM steps)")
    res["scaling_K"] = {}
    for k in (1, 2, 5, 10, 20, 50, 100):
        policy.cfg.sampling.inference_steps = k
        res["scaling_K"][k] = timeit(lambda: policy.predict_chunk(hist, seed=0), n if k <= 20 else max(5, n // 8))
        row(f"K = {k}", res["scaling_K"][k])
    policy.cfg.sampling.inference_steps = cfg.sampling.inference_steps if args.checkpoint else 10

    print("scaling with image size (random weights, same architecture otherwise)")
    res["scaling_image"] = {}
    for size in (64, 96, 128, 160):
        c = PolicyConfig.from_dict(dict(cfg.to_dict(), image_size=size))
        p = DiffusionPolicy(c).eval()
        h = make_history(c)
        res["scaling_image"][size] = timeit(lambda: p.predict_chunk(h, seed=0), n)
        row(f"{size} x {size}", res["scaling_image"][size])
    if cfg.cameras:
        c = PolicyConfig.from_dict(dict(cfg.to_dict(), cameras=[]))
        p = DiffusionPolicy(c).eval()
        h = make_history(c)
        res["state_only"] = timeit(lambda: p.predict_chunk(h, seed=0), n)
        row("state-only (no camera)", res["state_only"])
    return _finish(res, args)


def _finish(res: dict, args: argparse.Namespace) -> int:
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
