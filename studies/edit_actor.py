"""Does a small edit actor on the chunk (EXPO-style) get past the selection learner's plateau?

`lift_demos` and `lift_pretrained` fail mostly on grasps closed 1.5-3 cm off the cube centre
(docs/history.md, "Round 8"): choosing among the frozen policy's own proposals cannot move a grasp that
none of them places well. EXPO (Dong et al. 2025) adds a small Gaussian edit policy on top of the frozen
base policy and acts with the max-Q action among base and edited samples, in acting and in the TD backup.
This study does that on top of `mechanic-rl train-select`:

* per decision the frozen policy proposes ``N/2`` chunks (normalised executable chunks, T_a x A), the
  edit actor adds ``beta * tanh(mlp(features, chunk))`` to each (plus N(0, (sigma beta)^2) while training),
  clipped to [-1, 1]; the critic chooses among all N (base and edited), and the replay stores all N, so the
  TD target's max runs over base and edited chunks at s' as in EXPO;
* the actor makes one step per critic step: maximise the critic ensemble's mean Q of the edited base
  proposals at the replay's next states, minus ``lam * mean((delta / beta)^2)``; `Mechanic(Adam(lr=1))`;
* optionally (``--shaped``) the potential-based shaping of `potential_shaping.py`.

Run from the repository root:

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/edit_actor.py --shaped \\
        --checkpoint checkpoints/lift_pretrained --out runs/edit_A --seed 0 --total-steps 4500 \\
        --eval-every 0 --final-eval-episodes 200
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATE = {"actor": None, "train": True}


class EditActor(nn.Module):
    """delta = beta * tanh(MLP(features, chunk)), the last layer zero-initialised (starts as no edit)."""

    def __init__(self, feat_dim: int, act_dim: int, beta: float, hidden: int = 256):
        super().__init__()
        self.beta = float(beta)
        self.net = nn.Sequential(nn.Linear(feat_dim + act_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                 nn.Linear(hidden, act_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, feat: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """feat [B, F], chunk [B, M, D] -> delta [B, M, D]."""
        f = feat.unsqueeze(1).expand(-1, chunk.shape[1], -1)
        return self.beta * torch.tanh(self.net(torch.cat([f, chunk], -1)))


def _load_study(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "studies" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--beta", type=float, default=0.2, help="largest edit per dimension [normalised units]")
    ap.add_argument("--sigma", type=float, default=0.3, help="exploration noise while training [x beta]")
    ap.add_argument("--lam", type=float, default=0.01, help="weight of the edit's squared size")
    ap.add_argument("--candidates", type=int, default=16, help="N: N/2 base proposals + N/2 edited")
    ap.add_argument("--shaped", action="store_true", help="potential-based shaping (potential_shaping.py)")
    mine, rest = ap.parse_known_args(argv)

    from mechanic_rl_ros.control.chunk_loop import Chunk
    from mechanic_rl_ros.jobs import train_select
    from mechanic_rl_ros.optim.factory import build_optimizer
    from mechanic_rl_ros.policy.planner import propose
    from mechanic_rl_ros.rl.selection import DEFAULT_SELECT_CONFIG

    if mine.shaped:
        cfg_path = _load_study("potential_shaping").install(0.9)
    else:
        cfg_path = Path(tempfile.mkdtemp()) / "select.yaml"
        cfg_path.write_text(DEFAULT_SELECT_CONFIG.read_text())
    cfg_path.write_text("\n".join(f"num_candidates: {mine.candidates}" if ln.startswith("num_candidates:") else ln
                                  for ln in cfg_path.read_text().splitlines()))

    @torch.no_grad()
    def plan(self, reqs):
        policy = self.npol.policy
        pc, b, m = policy.cfg, len(reqs), self.n // 2
        feat = self.known_feat if self.known_feat is not None else self.npol.features([r.history for r in reqs])
        self.known_feat = None
        x = torch.randn((b * m, pc.pred_horizon, pc.action_dim), generator=self.generator)
        out, base = propose(policy, feat, x, [r.lead for r in reqs])
        actor = STATE["actor"]
        delta = actor(feat, base)
        if STATE["train"] and mine.sigma > 0:
            delta = delta + mine.sigma * actor.beta * torch.randn(delta.shape, generator=self.generator)
        cands = torch.cat([base, (base + delta).clamp(-1.0, 1.0)], 1)
        idx = self.choose(feat, cands, torch.tensor([r.index for r in reqs]))
        self.feat, self.cands, self.idx = feat, cands, idx
        acts = out.actions.view(b, m, pc.pred_horizon, pc.action_dim).cpu().numpy()
        chunks = []
        for i, r in enumerate(reqs):
            j = int(idx[i])
            if j < m:
                a = policy.executable(acts[i, j], r.lead)
            else:
                a = policy.normalizer.action.unnormalize(cands[i, j].view(pc.action_horizon, pc.action_dim)).numpy()
            chunks.append(Chunk(np.asarray(a, np.float64), r.index))
        return chunks

    train_select.SelectPlanner.__call__ = plan

    plain_evaluate = train_select.evaluate

    def evaluate(*args, **kwargs):
        STATE["train"] = False
        try:
            return plain_evaluate(*args, **kwargs)
        finally:
            STATE["train"] = True

    train_select.evaluate = evaluate

    plain_build = train_select.build_learner

    def build_learner(args, policy):
        online = plain_build(args, policy)
        cfg = online.cfg
        actor = STATE["actor"] = EditActor(cfg.feat_dim, cfg.act_dim, mine.beta)
        opt = build_optimizer("mechanic", actor.parameters())
        critic = online.ensemble.critic
        plain_step = online.step

        def step():
            result = plain_step()
            with online.lock:
                batch = online.replay.sample(cfg.batch_size, online.rng)
            live = torch.as_tensor(np.asarray(batch["done"])) < 0.5
            if bool(live.any()):
                feat = torch.as_tensor(np.asarray(batch["next_feat"]), dtype=torch.float32)[live]
                base = torch.as_tensor(np.asarray(batch["next_cands"]), dtype=torch.float32)[live][:, : mine.candidates // 2]
                delta = actor(feat, base)
                edited = (base + delta).clamp(-1.0, 1.0)
                n, m = edited.shape[:2]
                q = critic(feat.repeat_interleave(m, 0), edited.reshape(n * m, -1)).mean(0)
                loss = -q.mean() + mine.lam * (delta / actor.beta).pow(2).mean()
                params = list(actor.parameters())
                grads = torch.autograd.grad(loss, params)
                if all(bool(torch.isfinite(g).all()) for g in grads):
                    for p, g in zip(params, grads):
                        p.grad = g
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                rms = float((delta / actor.beta).pow(2).mean().sqrt().detach())
                STATE["steps"] = STATE.get("steps", 0) + 1
                if STATE["steps"] % 1000 == 0:
                    print(f"[edit actor] step {STATE['steps']}: Q of edited {float(q.mean().detach()):.3f}, "
                          f"edit rms {rms:.3f} x beta", flush=True)
            return result

        online.step = step
        return online

    train_select.build_learner = build_learner
    return train_select.main(["--select-config", str(cfg_path), *rest])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
