"""Mechanic: non-finite gradients, parameters without gradients, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from mechanic_rl_ros.optim import Mechanic

torch.set_num_threads(1)


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    base = torch.optim.AdamW([{"params": model[0].parameters()},
                              {"params": model[2].parameters(), "lr": 0.5}],
                             lr=1.0, weight_decay=0.01)
    return model, Mechanic(base)


def _loss(model, step):
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(16, 4, generator=gen)
    return ((model(x) - x[:, :2].sin()) ** 2).mean()


def _train_step(model, opt, step):
    opt.zero_grad()
    _loss(model, step).backward()
    opt.step()


def _snapshot(model, opt):
    return copy.deepcopy({"params": model.state_dict(), "opt": opt.state_dict(),
                          "tuner": opt.tuner_state})


def _assert_same(a, b):
    assert a["tuner"] == b["tuner"]
    for key, value in a["params"].items():
        assert torch.equal(value, b["params"][key]), key
    for part in ("state",):
        assert a["opt"][part].keys() == b["opt"][part].keys()
        for index, state in a["opt"][part].items():
            for key, value in state.items():
                other = b["opt"][part][index][key]
                assert (torch.equal(value, other) if isinstance(value, torch.Tensor)
                        else value == other), (index, key)
    base_a, base_b = a["opt"]["base"], b["opt"]["base"]
    assert base_a["param_groups"] == base_b["param_groups"]
    assert base_a["state"].keys() == base_b["state"].keys()
    for index, state in base_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, base_b["state"][index][key]), (index, key)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("at_step", [0, 5])
def test_non_finite_gradient_raises_and_touches_nothing(bad, at_step):
    model, opt = _setup()
    for t in range(at_step):
        _train_step(model, opt, t)
    before = _snapshot(model, opt)

    opt.zero_grad()
    _loss(model, at_step).backward()
    model[2].weight.grad[1, 3] = bad  # group 1, index 0; flat parameter index 2
    with pytest.raises(ValueError) as info:
        opt.step()
    message = str(info.value)
    assert "param_groups[1]['params'][0]" in message
    assert "parameter index 2" in message
    assert "untouched" in message
    _assert_same(before, _snapshot(model, opt))
    if at_step == 0:
        assert len(opt.state) == 0 and len(opt.base_optimizer.state) == 0


def test_training_after_a_rejected_batch_equals_training_without_it():
    model_a, opt_a = _setup()
    model_b, opt_b = _setup()
    for t in range(4):
        _train_step(model_a, opt_a, t)
        _train_step(model_b, opt_b, t)
    opt_a.zero_grad()
    _loss(model_a, 99).backward()
    model_a[0].bias.grad[0] = float("nan")
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\]"):
        opt_a.step()
    for t in range(4, 10):
        _train_step(model_a, opt_a, t)
        _train_step(model_b, opt_b, t)
    _assert_same(_snapshot(model_a, opt_a), _snapshot(model_b, opt_b))


def test_non_finite_parameter_raises():
    w = torch.nn.Parameter(torch.ones(3))
    v = torch.nn.Parameter(torch.ones(2))
    opt = Mechanic(torch.optim.Adam([v, w], lr=1.0))
    coeff = torch.tensor([1.0, -2.0, 3.0])
    for _ in range(3):
        opt.zero_grad()
        ((w * coeff).sum() + (v ** 2).sum()).backward()
        opt.step()
    with torch.no_grad():
        w[1] = float("inf")
    before = _snapshot(torch.nn.ParameterList([v, w]), opt)
    opt.zero_grad()
    ((w * coeff).sum() + (v ** 2).sum()).backward()  # the gradient stays finite
    assert torch.isfinite(w.grad).all()
    with pytest.raises(ValueError, match=r"non-finite value .* param_groups\[0\]\['params'\]\[1\]"):
        opt.step()
    _assert_same(before, _snapshot(torch.nn.ParameterList([v, w]), opt))


def test_parameters_without_gradient_are_left_alone_and_do_not_count():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    frozen = torch.nn.Parameter(torch.randn(3))
    a_ref = torch.nn.Parameter(a.detach().clone())
    frozen_before = frozen.detach().clone()
    opt = Mechanic(torch.optim.Adam([a, frozen], lr=1.0))
    opt_ref = Mechanic(torch.optim.Adam([a_ref], lr=1.0))
    target = torch.linspace(-1, 1, 5)
    for step in range(20):
        for param, optimizer in ((a, opt), (a_ref, opt_ref)):
            optimizer.zero_grad()
            (((param - target) ** 2).sum() * (1 + step % 3)).backward()
            optimizer.step()
        assert frozen.grad is None
    assert torch.equal(frozen.detach(), frozen_before)
    assert frozen not in opt.state
    assert torch.equal(a.detach(), a_ref.detach())
    assert opt.tuner_state == opt_ref.tuner_state


def test_parameter_joining_late_starts_from_its_current_value():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4))
    late = torch.nn.Parameter(torch.randn(4))
    opt = Mechanic(torch.optim.SGD([a, late], lr=1.0))
    for step in range(30):
        opt.zero_grad()
        loss = (a ** 2).sum()
        if step >= 20:
            loss = loss + ((late - 2.0) ** 2).sum()
        loss.backward()
        if step == 20:
            late_before, grad = late.detach().clone(), late.grad.clone()
            x_before, scale_before = a.detach().clone(), opt.scale
        opt.step()
        if step == 20:
            # its reference point is its value now: x_1 = x_0 - S' g
            torch.testing.assert_close(late.detach(), late_before - opt.scale * grad,
                                       rtol=1e-6, atol=1e-7)
            assert not torch.equal(a.detach(), x_before) and opt.scale != scale_before
    assert float(((late.detach() - 2.0) ** 2).sum()) < float(((late_before - 2.0) ** 2).sum())


def test_sparse_gradient_is_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = Mechanic(torch.optim.SGD(emb.parameters(), lr=1.0))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_step_without_any_gradient_is_a_no_op_and_closure_is_returned():
    model, opt = _setup()
    before = _snapshot(model, opt)
    assert opt.step() is None
    _assert_same(before, _snapshot(model, opt))

    def closure():
        opt.zero_grad()
        loss = _loss(model, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert opt.tuner_state["step"] == 1
