"""The fused CPU kernels of Mechanic (optim/fused_kernels.c) against the torch path.

The optax agreement of both paths is in test_mechanic.py; here: the two paths
give the same trajectories on float32 and float64 models, the kernels'
reductions do not depend on the thread count, tensors the kernels cannot take
fall back to torch, and the build is really there (make setup compiles it).
"""
from __future__ import annotations

import pytest
import torch

from mechanic_rl_ros.optim import Mechanic, fused


def _model(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 300), torch.nn.Tanh(), torch.nn.Linear(300, 300),
                               torch.nn.Tanh(), torch.nn.Linear(300, 3)).to(dtype)


def _run(dtype, use_fused, steps=60, base="adamw", freeze_from=None):
    """Train a small regression; return the parameters and scale after each step.

    With ``freeze_from``, the first layer gets no gradient until that step, so
    a parameter joins Mechanic late (its first step is not the model's)."""
    model = _model(dtype)
    params = list(model.parameters())
    groups = [{"params": params[:2], "lr": 0.5}, {"params": params[2:]}]
    if base == "adamw":
        opt_base = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.1)
    else:
        opt_base = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    opt = Mechanic(opt_base, fused=use_fused)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 12, generator=gen, dtype=dtype)
    y = torch.randn(64, 3, generator=gen, dtype=dtype)
    traj = []
    for t in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if freeze_from is not None and t < freeze_from:
            params[0].grad = params[1].grad = None
        opt.step()
        traj.append(([p.detach().clone() for p in params], opt.scale))
    return traj


def _assert_runs_agree(a, b, scale_rtol, param_rtol=1e-6):
    for t, ((pa, sa), (pb, sb)) in enumerate(zip(a, b)):
        assert sa == pytest.approx(sb, rel=scale_rtol), f"scale after step {t + 1}"
        for i, (x, y) in enumerate(zip(pa, pb)):
            err = float((x - y).abs().max())
            tol = param_rtol * max(1.0, float(y.abs().max()))
            assert err <= tol, f"param {i} after step {t + 1}: {err:.3e} > {tol:.3e}"
    # the run did move: the comparison is not between two untouched models
    assert a[-1][1] > 10 * a[0][1]


def test_library_is_built_and_loads():
    assert fused.available(), fused.unavailable_reason()
    assert Mechanic(torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=1.0))._fused


@pytest.mark.parametrize("base", ["adamw", "sgd"])
def test_fused_and_torch_paths_agree_in_float64(base):
    _assert_runs_agree(_run(torch.float64, True, base=base, freeze_from=5),
                       _run(torch.float64, False, base=base, freeze_from=5), scale_rtol=1e-6)


@pytest.mark.parametrize("base", ["adamw", "sgd"])
def test_fused_and_torch_paths_agree_in_float32(base):
    """The two paths round differently; Adam with lr=1 amplifies rounding
    differences (its first steps are nearly sign(g)), so after ~45 steps of
    this problem float32 runs drift apart (as float32 and float64 runs of the
    same path do from the start). The first 40 steps agree to ~1e-7."""
    _assert_runs_agree(_run(torch.float32, True, steps=40, base=base, freeze_from=5),
                       _run(torch.float32, False, steps=40, base=base, freeze_from=5), scale_rtol=1e-5)


def test_fused_reductions_do_not_depend_on_threads():
    gen = torch.Generator().manual_seed(0)
    shapes = [(1000, 70), (70,), (33, 4000), (5,)]
    g = [torch.randn(s, generator=gen) for s in shapes]
    x = [torch.randn(s, generator=gen) for s in shapes]
    r = [torch.randn(s, generator=gen) for s in shapes]
    r[1] = None
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            snaps = [torch.empty_like(t) for t in x]
            results.append(fused.measure(g, x, r, snaps))
            assert all(torch.equal(s, t) for s, t in zip(snaps, x))
    finally:
        torch.set_num_threads(threads)
    assert (results[0] == results[1]).all() and (results[0] == results[2]).all()
    want = [(float((gi.double() ** 2).sum()), float((xi.double() ** 2).sum()),
             0.0 if ri is None else float((gi.double() * ri.double()).sum()),
             0.0 if ri is None else float((xi.double() * ri.double()).sum()))
            for gi, xi, ri in zip(g, x, r)]
    got = [v for row in results[0].tolist() for v in row]
    assert got == pytest.approx([v for row in want for v in row], rel=1e-5, abs=1e-3)


def test_tensors_the_kernels_cannot_take_use_torch():
    """A non-contiguous gradient (here: set by hand, transposed) makes its
    bucket take the torch path; the step is still Mechanic's."""
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(40, 30))
    w2 = torch.nn.Parameter(torch.randn(40, 30))
    w2.data.copy_(w1.data)
    grad = torch.randn(30, 40).t()
    assert not grad.is_contiguous()
    assert not fused.supports([grad])
    opt_f = Mechanic(torch.optim.SGD([w1], lr=1.0), fused=True)
    opt_t = Mechanic(torch.optim.SGD([w2], lr=1.0), fused=False)
    for _ in range(5):
        w1.grad, w2.grad = grad.clone(memory_format=torch.preserve_format), grad.contiguous()
        opt_f.step()
        opt_t.step()
    assert torch.allclose(w1, w2, rtol=0, atol=1e-6)
    assert opt_f.scale == pytest.approx(opt_t.scale, rel=1e-5)


def test_fused_true_without_the_library_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MECHANIC_FUSED", "0")
    assert not fused.available()
    with pytest.raises(RuntimeError, match="MECHANIC_FUSED=0"):
        Mechanic(torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=1.0), fused=True)
    assert not Mechanic(torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=1.0))._fused


def test_fused_path_refuses_nan_gradient_without_touching_state():
    torch.manual_seed(0)
    model = _model(torch.float32)
    opt = Mechanic(torch.optim.Adam(model.parameters(), lr=1.0), fused=True)
    x = torch.randn(8, 12)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    sd = {k: v.clone() for k, v in opt.state[next(model.parameters())].items()
          if isinstance(v, torch.Tensor)}
    scale = opt.scale
    opt.zero_grad()
    model(x).square().mean().backward()
    list(model.parameters())[2].grad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\]"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.scale == scale
    after = opt.state[next(model.parameters())]
    assert all(torch.equal(v, after[k]) for k, v in sd.items())

