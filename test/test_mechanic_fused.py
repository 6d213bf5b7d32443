"""The fused CPU kernels of Mechanic (optim/fused_kernels.c) against the torch path.

The optax agreement of both paths is in test_mechanic.py; here: from the same
state the two paths take the same float64 step up to the rounding of their
reductions, they give the same float32 trajectories, the kernels' reductions
do not depend on the thread count, tensors the kernels cannot take fall back
to torch, and the build is really there (make setup compiles it).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from mechanic_rl_ros.optim import Mechanic, fused, tuner

UNIT = 2.0 ** -53  # unit roundoff of float64


@pytest.fixture(autouse=True)
def one_thread():
    """torch's reductions and matmuls split their work by thread count, so the
    torch path's rounding (and the gradients) depend on it; pin it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 300), torch.nn.Tanh(), torch.nn.Linear(300, 300),
                               torch.nn.Tanh(), torch.nn.Linear(300, 3)).to(dtype)


def _optimizer(model, base, use_fused):
    params = list(model.parameters())
    groups = [{"params": params[:2], "lr": 0.5}, {"params": params[2:]}]
    if base == "adamw":
        opt_base = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.1)
    elif base == "adam_l2":  # coupled weight decay, beta1 < 0.5 (torch's other lerp formula)
        opt_base = torch.optim.Adam(groups, lr=1.0, betas=(0.4, 0.99), weight_decay=0.1)
    elif base == "amsgrad":  # not taken by the fused Adam kernel: measure/finish around it
        opt_base = torch.optim.Adam(groups, lr=1.0, amsgrad=True)
    else:
        opt_base = torch.optim.SGD(groups, lr=1.0, momentum=0.9)
    return Mechanic(opt_base, fused=use_fused)


def _data(dtype):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(64, 12, generator=gen, dtype=dtype),
            torch.randn(64, 3, generator=gen, dtype=dtype))


def _backward(model, x, y, t, freeze_from):
    torch.nn.functional.mse_loss(model(x), y).backward()
    if freeze_from is not None and t < freeze_from:
        model[0].weight.grad = model[0].bias.grad = None


def _run(dtype, use_fused, steps=60, base="adamw", freeze_from=None):
    """Train a small regression; return the parameters and scale after each step.

    With ``freeze_from``, the first layer gets no gradient until that step, so
    a parameter joins Mechanic late (its first step is not the model's)."""
    model = _model(dtype)
    params = list(model.parameters())
    opt = _optimizer(model, base, use_fused)
    x, y = _data(dtype)
    traj = []
    for t in range(steps):
        opt.zero_grad()
        _backward(model, x, y, t, freeze_from)
        opt.step()
        traj.append(([p.detach().clone() for p in params], opt.scale))
    return traj


def _h_interval(opt):
    """h of (M3) before ``opt.step()``, computed here in float64, and a bound
    on how far either path's h can be from it: each sum of n terms, in any
    order, is within gamma_n * sum|terms| of the exact one (gamma_n = n u /
    (1 - n u), Higham, Accuracy and Stability, Thm. 3.1 / eq. 3.5); the products
    (g * k R, a per-tensor k times a sum) add one rounding each."""
    hyper = opt.hyperparameters
    with torch.no_grad():
        parts = []
        for p in (p for group in opt.param_groups for p in group["params"]):
            if p.grad is None:
                continue
            state = opt.state.get(p)
            disp = (state["offset_scale"] * state["offset"] if state
                    else torch.zeros_like(p)).double()
            parts.append((p.grad.double().flatten(), p.double().flatten(), disp.flatten()))
        g, x, disp = (torch.cat(t) for t in zip(*parts))
        n = g.numel() + 2
        gamma = n * UNIT / (1 - n * UNIT)
        s, eps = opt.scale, hyper["eps"]
        g_sq, x_sq = float(g @ g), float(x @ x)
        g_dot, x_dot = float(g @ disp), float(x @ disp)
        c = hyper["weight_decay"] * s * math.sqrt(g_sq) / (math.sqrt(x_sq) + eps)
        h = tuner.betting_signal(g_sq, x_sq, g_dot, x_dot, s, hyper)
        # |error of c| <= 2 gamma |c| (the two norms), |error of the dots| <= gamma sum|terms|
        spread = gamma * (float((g * disp).abs().sum()) + abs(c) * float((x * disp).abs().sum())
                          + 2 * abs(c * x_dot)) / (s + eps)
    # each path is within `spread` of the exact h, and so is ours: 2 * spread from ours
    return h, 2 * spread + 4 * UNIT * abs(h)


def _scale_tolerance(opt, h, dh):
    """How far the new scale moves when h moves within h +- dh (tuner update
    (M4)-(M7), evaluated), plus the rounding of the scalar update itself."""
    hyper, state = opt.hyperparameters, opt.tuner_state
    scales = [tuner.scale(tuner.tuner_update(state, h + k * dh, hyper)) for k in (-1, 0, 1)]
    return max(scales) - min(scales) + 16 * UNIT * max(scales)


def _param_tolerance(opt, p, x_before, disp_before, scale_before, scale_tol):
    """Elementwise bound on the difference of two float64 steps from the same
    state: the new scale S' differs by up to ``scale_tol``, which moves
    x' = x_ref + S'(Delta + u) by scale_tol / S' * |x' - x_ref|; each path
    rounds a handful of additions of terms no larger than |x|, |x'|,
    |x' - x_ref| and S'|u| <= |x' - x_ref| + S'/S |x - x_ref|."""
    state = opt.state[p]
    disp = (state["offset_scale"] * state["offset"]).abs()
    s_new = opt.scale
    return (scale_tol / s_new * disp
            + 16 * UNIT * (x_before.abs() + p.detach().abs() + disp
                           + s_new / scale_before * disp_before.abs()))


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


@pytest.mark.parametrize("base", ["adamw", "adam_l2", "amsgrad", "sgd"])
def test_fused_and_torch_paths_agree_in_float64(base):
    """Each step of a 60-step run, taken by both paths from the same state
    (the torch path's), agrees to a bound derived from the rounding of the
    reductions (_h_interval). Whole trajectories are not compared in float64:
    on this problem Adam with the learned scale amplifies a difference ~7x a
    step around step 45 (an ulp at step 40 is ~1e-6 at step 51), so their
    difference says how many steps were taken, not whether a step is right."""
    dtype, freeze_from = torch.float64, 5
    model = _model(dtype)
    twin = _model(dtype)
    opt = _optimizer(model, base, use_fused=False)
    opt_twin = _optimizer(twin, base, use_fused=True)
    x, y = _data(dtype)
    scales = []
    for t in range(60):
        twin.load_state_dict(model.state_dict())
        opt_twin.load_state_dict(copy.deepcopy(opt.state_dict()))
        opt.zero_grad()
        _backward(model, x, y, t, freeze_from)
        for p, q in zip(model.parameters(), twin.parameters()):
            q.grad = None if p.grad is None else p.grad.clone()
        h, dh = _h_interval(opt)
        scale_tol = _scale_tolerance(opt, h, dh)
        scale_before = opt.scale
        before = {p: (p.detach().clone(), opt.state[p]["offset_scale"] * opt.state[p]["offset"]
                      if opt.state.get(p) else torch.zeros_like(p))
                  for p in model.parameters()}
        opt.step()
        opt_twin.step()
        assert abs(opt_twin.scale - opt.scale) <= scale_tol, f"scale after step {t + 1}"
        for i, (p, q) in enumerate(zip(model.parameters(), twin.parameters())):
            if p.grad is None:
                assert torch.equal(p, q), f"param {i} without gradient moved"
                continue
            tol = _param_tolerance(opt, p, *before[p], scale_before, scale_tol)
            excess = float(((q - p).detach().abs() - tol).max())
            assert excess <= 0, f"param {i} after step {t + 1}: exceeds its bound by {excess:.3e}"
        scales.append(opt.scale)
    assert scales[-1] > 10 * scales[0]  # the run did move


@pytest.mark.parametrize("base", ["adamw", "sgd"])
def test_fused_and_torch_paths_agree_in_float32(base):
    """The two paths round differently; Adam with lr=1 amplifies rounding
    differences (its first steps are nearly sign(g)), so after ~45 steps of
    this problem float32 runs drift apart (as float32 and float64 runs of the
    same path do from the start). The first 40 steps agree to ~1e-7."""
    _assert_runs_agree(_run(torch.float32, True, steps=40, base=base, freeze_from=5),
                       _run(torch.float32, False, steps=40, base=base, freeze_from=5), scale_rtol=1e-5)


def _adam_run(threads=1, steps=12, bump_versions=False, dtype=torch.float32):
    """Mechanic(AdamW) on the regression with tensors larger than a kernel
    block; returns the model and optimizer."""
    torch.set_num_threads(threads)
    model = _model(dtype)
    opt = _optimizer(model, "adamw", use_fused=True)
    x, y = _data(dtype)
    for t in range(steps):
        opt.zero_grad()
        _backward(model, x, y, t, None)
        opt.step()
        if bump_versions:  # as any in-place write would: the cached sums are not used
            torch.autograd.graph.increment_version(list(model.parameters()))
    return model, opt


def test_fused_adam_does_not_depend_on_threads():
    runs = [_adam_run(threads=n) for n in (1, 2, 3)]
    for model, opt in runs[1:]:
        assert opt.tuner_state == runs[0][1].tuner_state
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), runs[0][0].parameters()))


def test_fused_threads_are_torchs_openmp_team_and_agree_with_pthreads():
    """Built by ``make setup`` with OpenMP and run beside torch's libgomp, the kernels use torch's
    own intra-op threads (one OpenMP runtime in the process); with their own pthreads instead the
    run is bit for bit the same."""
    assert fused.threading() == "openmp", fused._openmp_runtimes()
    assert len(fused._openmp_runtimes()) == 1
    lib = fused._load()
    try:
        lib.mechanic_threading(0)
        assert fused.threading() == "pthreads"
        model_p, opt_p = _adam_run(threads=2)
    finally:
        lib.mechanic_threading(1)
    model_o, opt_o = _adam_run(threads=2)
    assert opt_o.tuner_state == opt_p.tuner_state
    assert all(torch.equal(p, q) for p, q in zip(model_o.parameters(), model_p.parameters()))


def test_fused_adam_sums_left_for_the_next_step_equal_recomputed_ones():
    """The update pass leaves |x'|^2 and <x', R'> for the next step; a run that
    recomputes them every step (its parameters' versions bumped) is bitwise
    the same run, which is what a resumed run relies on."""
    (model_a, opt_a), (model_b, opt_b) = _adam_run(), _adam_run(bump_versions=True)
    assert opt_a.tuner_state == opt_b.tuner_state
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))


def test_fused_adam_sees_in_place_changes_between_steps():
    """A parameter scaled in place between steps: the next step uses its new
    value in h (as a twin loaded from the same state, which recomputes all
    sums, does)."""
    model, opt = _adam_run(steps=6)
    with torch.no_grad():
        model[2].weight.mul_(0.5)
    twin = _model(torch.float32)
    opt_twin = _optimizer(twin, "adamw", use_fused=True)
    twin.load_state_dict(model.state_dict())
    opt_twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    x, y = _data(torch.float32)
    for m, o in ((model, opt), (twin, opt_twin)):
        o.zero_grad()
        _backward(m, x, y, 6, None)
        o.step()
    assert opt.tuner_state == opt_twin.tuner_state
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


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

