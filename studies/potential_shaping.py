"""Does a potential-shaped reward break the selection learner's plateau?

The selection critic learns from a sparse 0/1 outcome, and `lift_demos`' failures are grasps closed
1.5-3 cm off the cube centre that push the cube away (a per-step trace of its 8 failures on reset seeds
100000-100199; the successes close 0.7 cm off at the median). The simulator's shaped reward (reach,
both fingers on the cube, lift; `sim/tasks.py`) sees such a grasp at once. This study gives the critic
potential-based shaping (Ng, Harada, Russell, ICML 1999, Theorem 1: F = gamma Phi(s') - Phi(s) leaves
the optimal policy unchanged) with Phi = the shaped reward of the state a chunk ends in, per decision:

    r'_chunk = r_sparse + gamma (1 - ended) Phi(s_end) - Phi(s_start),   Phi(first state) = 0,

and runs `mechanic-rl train-select` with it, the value clip off (Q' = Q - Phi(s) lies in [-1, 1]).
It patches `sim.chunks.run_chunk` in this process (the trainer's simulators run in-process), so the
learner, its schedule and its evaluation are the product's own.

    PYTHONPATH=$PWD MUJOCO_GL=egl .venv/bin/python studies/potential_shaping.py \\
        --checkpoint checkpoints/lift_pretrained --out runs/shaped_A --seed 0 --total-steps 4500 \\
        --eval-every 0 --final-eval-episodes 200
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def install(gamma: float) -> Path:
    """Patch ``sim.chunks.run_chunk`` to return the shaped chunk reward; returns a select config with the
    value clip off and this ``gamma``, to pass as ``--select-config``."""
    from mechanic_rl_ros.rl.selection import DEFAULT_SELECT_CONFIG
    from mechanic_rl_ros.sim import chunks

    plain = chunks.run_chunk

    def shaped_chunk(env, actions, reset_on_end):
        res = plain(env, actions, reset_on_end)
        ended = res.terminated or res.truncated
        phi_end = 0.0 if ended else float(env.task.evaluate(env.sim).shaped_reward)
        res.reward = res.reward + gamma * phi_end - getattr(env, "_study_phi", 0.0)
        env._study_phi = phi_end  # 0 again at the next episode's first decision
        return res

    chunks.run_chunk = shaped_chunk
    text = DEFAULT_SELECT_CONFIG.read_text()
    cfg = Path(tempfile.mkdtemp()) / "select_shaped.yaml"
    cfg.write_text("\n".join("q_max: 0.0" if ln.startswith("q_max:") else
                             f"gamma: {gamma}" if ln.startswith("gamma:") else ln for ln in text.splitlines()))
    return cfg


def main(argv: list[str]) -> int:
    from mechanic_rl_ros.jobs import train_select

    return train_select.main(["--select-config", str(install(0.9)), *argv])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
