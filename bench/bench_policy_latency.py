"""Inference latency of the diffusion policy on CPU: one chunk = encode T_o frames + K denoising steps.

Usage::

    .venv/bin/python bench/bench_policy_latency.py --checkpoint checkpoints/lift_pretrained --json out.json
    .venv/bin/python bench/bench_policy_latency.py --quick          # headline only, random weights

Prints (and optionally writes as JSON, kept current while it runs): parameter
counts; median / p99 wall-clock latency and CPU time of
``DiffusionPolicy.predict_chunk`` over >= 200 calls for the default config
(one 96x96 camera, T_o = 2, T_p = 16, K = 10, 2 threads); the split into
encoder and per-step U-Net time; the effect of each measure taken (inference
mode vs autograd, encoding once per chunk vs once per step, channels-last
images / weights, the GEMM temporal convolution, threads, ``torch.compile``);
and how latency scales with K and with the image size.  Latency does not
depend on the weight values, so random weights are used unless
``--checkpoint`` is given.

The machine may be shared: variants are timed *interleaved* (round robin, one
call each per round) so that they see the same background load, and the
1-minute load average is reported with every row.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechanic_rl_ros.policy import DiffusionPolicy, ObsHistory, PolicyConfig  # noqa: E402
from mechanic_rl_ros.policy.diffusion import ddim_mean_sigma  # noqa: E402
from mechanic_rl_ros.policy.unet import TemporalConv1d  # noqa: E402

RESULTS: dict = {}
JSON_PATH: list[str] = []


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def save() -> None:
    if JSON_PATH:
        Path(JSON_PATH[0]).write_text(json.dumps(RESULTS, indent=2) + "\n")


def make_history(cfg: PolicyConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    h = ObsHistory(cfg.obs_horizon, cfg.cameras, cfg.lowdim_keys)
    for _ in range(cfg.obs_horizon):
        obs = {k: rng.normal(size=cfg.lowdim_dims[k]).astype(np.float32) for k in cfg.lowdim_keys}
        obs["images"] = {c: rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
                         for c in cfg.cameras}
        h.push(obs)
    return h.stacked()


class Variant:
    """A timed callable with cheap enter/exit hooks that switch global state around each call."""

    def __init__(self, name: str, fn: Callable[[], object], enter: Callable[[], None] | None = None,
                 exit_: Callable[[], None] | None = None):
        self.name, self.fn, self.enter, self.exit = name, fn, enter, exit_
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def call(self, record: bool) -> None:
        if self.enter:
            self.enter()
        c0, t0 = time.process_time(), time.perf_counter()
        self.fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if self.exit:
            self.exit()
        if record:
            self.wall.append(t1 - t0)
            self.cpu.append(c1 - c0)

    def summary(self) -> dict:
        w, c = np.asarray(self.wall) * 1e3, np.asarray(self.cpu) * 1e3
        return {"median_ms": float(np.median(w)), "p99_ms": float(np.percentile(w, 99)),
                "mean_ms": float(w.mean()), "cpu_median_ms": float(np.median(c)), "calls": len(w)}


def run_interleaved(title: str, variants: list[Variant], rounds: int, key: str, warmup: int = 5) -> None:
    print(f"{title}  ({rounds} interleaved rounds)", flush=True)
    rng = np.random.default_rng(0)
    loads = []
    for r in range(warmup + rounds):
        for i in rng.permutation(len(variants)):
            variants[i].call(record=r >= warmup)
        if r % 10 == 0:
            loads.append(loadavg())
    RESULTS[key] = {}
    for v in variants:
        s = v.summary()
        s["load1_mean"] = float(np.mean(loads))
        RESULTS[key][v.name] = s
        print(f"  {v.name:<50s} median {s['median_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  "
              f"cpu {s['cpu_median_ms']:6.1f} ms  (n={s['calls']})", flush=True)
    print(f"  load average during the rounds: {min(loads):.1f} - {max(loads):.1f}", flush=True)
    save()


def naive_chunk(policy: DiffusionPolicy, hist: dict) -> None:
    """Baseline without the reuse: the observation encoder runs again at every denoising step."""
    with torch.inference_mode():
        obs = policy.batch_single(hist)
        sp = policy.schedule.step_params(policy.cfg.sampling.inference_steps)
        x = torch.randn(1, policy.cfg.pred_horizon, policy.cfg.action_dim)
        for i in range(len(sp.timesteps)):
            cond = policy.encode(obs)
            out = policy.net(x, sp.timesteps[i].expand(1), cond)
            x, _ = ddim_mean_sigma(x, out, sp.abar[i].float(), sp.abar_prev[i].float(), torch.tensor(0.0), 1.0,
                                   policy.cfg.diffusion.prediction)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=200, help="calls per variant in the headline/measures table")
    ap.add_argument("--sweep-rounds", type=int, default=40, help="calls per point of the K / image-size sweeps")
    ap.add_argument("--quick", action="store_true", help="headline figure only")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile of the U-Net")
    ap.add_argument("--json", default=None, help="write all figures to this file (kept current)")
    args = ap.parse_args(argv)
    if args.json:
        JSON_PATH.append(args.json)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = RESULTS
    res.update({"threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count()})

    policy = (DiffusionPolicy.from_checkpoint(args.checkpoint) if args.checkpoint
              else DiffusionPolicy(PolicyConfig())).eval()
    cfg = policy.cfg
    k0 = cfg.sampling.inference_steps
    hist = make_history(cfg)
    n_enc = sum(p.numel() for p in policy.net.encoders.parameters())
    n_unet = sum(p.numel() for p in policy.net.unet.parameters())
    res["params"] = {"total": n_enc + n_unet, "vision_encoders": n_enc, "unet": n_unet}
    res["config"] = {"cameras": list(cfg.cameras), "image_size": cfg.image_size, "T_o": cfg.obs_horizon,
                     "T_p": cfg.pred_horizon, "K": k0, "arch_id": cfg.arch_id,
                     "vision_width": cfg.vision.base_width, "unet_dims": list(cfg.unet.down_dims)}
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; config {res['config']}")
    print(f"parameters: total {res['params']['total'] / 1e6:.2f} M (vision {n_enc / 1e6:.2f} M, "
          f"U-Net {n_unet / 1e6:.2f} M)", flush=True)

    def chunk(p: DiffusionPolicy = policy, h: dict = hist) -> Callable[[], object]:
        return lambda: p.predict_chunk(h, seed=0)

    headline = Variant("predict_chunk (default)", chunk())
    if args.quick:
        run_interleaved("headline", [headline], args.rounds, "headline")
        return 0

    obs = policy.batch_single(hist)
    with torch.inference_mode():
        cond = policy.encode(obs)
    x = torch.randn(1, cfg.pred_horizon, cfg.action_dim)
    t = torch.tensor([50])

    def in_inference(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            with torch.inference_mode():
                fn()
        return run

    def no_grad_sample() -> None:
        with torch.no_grad():
            policy.sample(policy.batch_single(hist), stochastic=False, generator=torch.Generator().manual_seed(0))

    def autograd_sample() -> None:
        policy.sample.__wrapped__(policy, policy.batch_single(hist), stochastic=False,  # type: ignore[attr-defined]
                                  generator=torch.Generator().manual_seed(0))

    def set_attr(obj: object, name: str, value: object) -> Callable[[], None]:
        return lambda: setattr(obj, name, value)

    cl_policy = copy.deepcopy(policy)
    cl_policy.net.encoders.to(memory_format=torch.channels_last)
    variants = [
        headline,
        Variant("  encoder only (T_o frames)", in_inference(lambda: policy.encode(obs))),
        Variant("  one U-Net step", in_inference(lambda: policy.net(x, t, cond))),
        Variant("torch.no_grad instead of inference_mode", no_grad_sample),
        Variant("autograd on (no no_grad / inference_mode)", autograd_sample),
        Variant("encoder re-run at every denoising step", lambda: naive_chunk(policy, hist)),
        Variant("images copied to NCHW (no channels-last)", chunk(),
                set_attr(policy.net, "channels_last", False), set_attr(policy.net, "channels_last", True)),
        Variant("encoder weights channels-last too", chunk(cl_policy)),
        Variant("native conv1d instead of GEMM temporal conv", chunk(),
                set_attr(TemporalConv1d, "GEMM_MIN_CHANNELS", 1 << 30),
                set_attr(TemporalConv1d, "GEMM_MIN_CHANNELS", TemporalConv1d.GEMM_MIN_CHANNELS)),
        Variant("1 thread instead of 2", chunk(),
                lambda: torch.set_num_threads(1), lambda: torch.set_num_threads(args.threads)),
    ]
    if args.compile:
        comp_policy = copy.deepcopy(policy)
        t0 = time.time()
        comp_policy.net.unet = torch.compile(comp_policy.net.unet)  # type: ignore[assignment]
        comp_policy.predict_chunk(hist, seed=0)
        res["compile_time_s"] = time.time() - t0
        print(f"torch.compile of the U-Net took {res['compile_time_s']:.0f} s", flush=True)
        variants.append(Variant("torch.compile(unet)", chunk(comp_policy)))
    run_interleaved("headline and measures (each row changes one thing w.r.t. the default)", variants,
                    args.rounds, "measures")
    res["headline"] = res["measures"][headline.name]
    save()

    ks = (1, 2, 5, 10, 20, 50, 100)
    run_interleaved("scaling with K (DDIM steps)",
                    [Variant(f"K = {k}", chunk(), set_attr(policy.cfg.sampling, "inference_steps", k),
                             set_attr(policy.cfg.sampling, "inference_steps", k0)) for k in ks],
                    args.sweep_rounds, "scaling_K")

    sized = []
    for size in (64, 96, 128, 160):
        c = PolicyConfig.from_dict(dict(cfg.to_dict(), image_size=size))
        p = DiffusionPolicy(c).eval()
        sized.append(Variant(f"{size} x {size} image", chunk(p, make_history(c))))
    if cfg.cameras:
        c = PolicyConfig.from_dict(dict(cfg.to_dict(), cameras=[]))
        p = DiffusionPolicy(c).eval()
        sized.append(Variant("state-only (no camera)", chunk(p, make_history(c))))
    run_interleaved("scaling with image size (same architecture otherwise)", sized, args.sweep_rounds,
                    "scaling_image")
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
