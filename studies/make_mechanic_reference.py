"""Generate the optax reference trajectories that test/test_mechanic.py checks.

Runs ``optax.contrib.mechanize`` (optax 0.2.8) in float64 on small deterministic
problems and writes every step's parameters, scale (sum of s) and loss to
``test/data/mechanic_reference.json``. The torch tests replay the same problems
with :class:`mechanic_rl_ros.optim.Mechanic` and compare step by step, so they
never need JAX.

This script needs JAX and optax, which do not belong in the project venv::

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax optax==0.2.8 numpy
    /tmp/jaxenv/bin/python studies/make_mechanic_reference.py

Problems:

* ``anchor``: the quadratic 0.5 * sum H (x - c)^2 with a=[1, 2], b=[-1],
  H a=[1, 2], b=[0.5], c a=[0.5, -0.5], b=[0.25]; ``mechanize(sgd(1.0))`` with
  default hyper-parameters, 200 steps (a sanity anchor small enough to check by hand).
* ``mlp_*``: a 3-4-2 tanh MLP regressed onto fixed random targets (mean
  squared error over 8 samples), 60 steps, with several base optimizers:
  SGD, SGD with momentum, Adam, AdamW, Adam under a warm-up + cosine schedule
  peaking at 1.0, and Adam with non-default Mechanic hyper-parameters.
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "data",
                   "mechanic_reference.json")

MLP_STEPS = 60
ANCHOR_STEPS = 200
WARMUP = 10


def warmup_cosine(step: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1.0 over WARMUP steps, then
    cosine decay to 0.1 at MLP_STEPS. The torch test uses the same formula in a
    LambdaLR, so step t of both runs sees the same base learning rate."""
    if step < WARMUP:
        return (step + 1) / WARMUP
    frac = min(1.0, (step - WARMUP) / (MLP_STEPS - WARMUP))
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * frac))


def anchor_problem():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([-1.0])}
    hess = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([0.5])}
    centre = {"a": jnp.array([0.5, -0.5]), "b": jnp.array([0.25])}

    def loss(p):
        return sum(0.5 * jnp.sum(hess[k] * (p[k] - centre[k]) ** 2) for k in p)

    data = {"hess": {k: v.tolist() for k, v in hess.items()},
            "centre": {k: v.tolist() for k, v in centre.items()}}
    return params, loss, data


def mlp_problem():
    rng = np.random.RandomState(1234)
    x = rng.randn(8, 3)
    y = rng.randn(8, 2)
    params = {
        "w1": jnp.asarray(rng.randn(4, 3) * 0.5),
        "b1": jnp.asarray(rng.randn(4) * 0.1),
        "w2": jnp.asarray(rng.randn(2, 4) * 0.5),
        "b2": jnp.asarray(rng.randn(2) * 0.1),
    }
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss(p):
        hidden = jnp.tanh(xj @ p["w1"].T + p["b1"])
        return jnp.mean((hidden @ p["w2"].T + p["b2"] - yj) ** 2)

    return params, loss, {"x": x.tolist(), "y": y.tolist()}


def run(params, loss, opt, steps):
    state = opt.init(params)
    # Op by op, like torch: jit fusion changes the rounding, and near the edge
    # of stability rounding differences grow (about 1e-4 relative by step 200
    # of the anchor between jitted and eager optax).
    grad_fn = jax.value_and_grad(loss)
    update = opt.update
    init = {k: np.asarray(v).tolist() for k, v in params.items()}
    traj = {k: [] for k in params}
    scales, losses = [], []
    for _ in range(steps):
        value, grads = grad_fn(params)
        losses.append(float(value))
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        scales.append(float(jnp.sum(state.s)))
        for k, v in params.items():
            traj[k].append(np.asarray(v).tolist())
    final_loss = float(loss(params))
    return {"init": init, "params": traj, "scale": scales,
            "loss_before_step": losses, "final_loss": final_loss}


def main() -> int:
    schedule = lambda count: jnp.asarray(  # noqa: E731
        [warmup_cosine(t) for t in range(MLP_STEPS + 1)])[count]
    mlp_bases = {
        "mlp_sgd": (optax.sgd(1.0), {"base": "sgd", "lr": 1.0}, {}),
        "mlp_sgd_momentum": (optax.sgd(1.0, momentum=0.9),
                             {"base": "sgd", "lr": 1.0, "momentum": 0.9}, {}),
        "mlp_adam": (optax.adam(1.0), {"base": "adam", "lr": 1.0}, {}),
        "mlp_adamw": (optax.adamw(1.0, weight_decay=0.1),
                      {"base": "adamw", "lr": 1.0, "weight_decay": 0.1}, {}),
        "mlp_adam_schedule": (optax.adam(schedule),
                              {"base": "adam", "lr": 1.0, "schedule": "warmup_cosine"}, {}),
        "mlp_adam_custom": (optax.adam(1.0), {"base": "adam", "lr": 1.0},
                            {"weight_decay": 0.1, "eps": 1e-6, "s_init": 1e-4,
                             "num_betas": 4}),
    }
    cases = {}
    params, loss, data = anchor_problem()
    result = run(params, loss, optax.contrib.mechanize(optax.sgd(1.0)), ANCHOR_STEPS)
    cases["anchor"] = {"problem": "quadratic", "data": data,
                       "base": {"base": "sgd", "lr": 1.0}, "mechanic": {},
                       "steps": ANCHOR_STEPS, **result}
    for name, (base, base_desc, mech_kwargs) in mlp_bases.items():
        params, loss, data = mlp_problem()
        opt = optax.contrib.mechanize(base, **mech_kwargs)
        cases[name] = {"problem": "mlp", "data": data, "base": base_desc,
                       "mechanic": mech_kwargs, "steps": MLP_STEPS,
                       **run(params, loss, opt, MLP_STEPS)}
    meta = {"generator": "studies/make_mechanic_reference.py", "optax": optax.__version__,
            "jax": jax.__version__, "dtype": "float64",
            "schedule": {"warmup": WARMUP, "steps": MLP_STEPS,
                         "formula": "t<warmup: (t+1)/warmup; else 0.1+0.45*(1+cos(pi*min(1,(t-warmup)/(steps-warmup))))"},
            "convention": "params[k][t] and scale[t] are after update t+1; "
                          "loss_before_step[t] is the loss at the parameters update t+1 was computed at"}
    with open(OUT, "w") as fh:
        json.dump({"meta": meta, "cases": cases}, fh)
    anchor = cases["anchor"]
    print(f"wrote {os.path.normpath(OUT)}")
    print("anchor scale after step 1, 3, 50:",
          [f"{anchor['scale'][i]:.12e}" for i in (0, 2, 49)])
    print(f"anchor loss after 200 updates {anchor['final_loss']:.12e}, "
          f"loss at the 200th update's parameters {anchor['loss_before_step'][-1]:.12e}")
    for name, case in cases.items():
        print(f"{name:18s} final scale {case['scale'][-1]:.6e} final loss {case['final_loss']:.6e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
