"""Mechanic: resuming from a state_dict, x_ref at the first step, shared groups."""

from __future__ import annotations


import pytest
import torch

from mechanic_rl_ros.optim import Mechanic

torch.set_num_threads(1)


def _model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    model.unused = torch.nn.Parameter(torch.ones(4))  # never gets a gradient
    return model.to(dtype)


def _batch(step, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(32, 5, generator=gen)
    y = torch.sin(x[:, :3]) + 0.1 * torch.randn(32, 3, generator=gen)
    return x.to(dtype), y.to(dtype)


def _build(model):
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    others = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    base = torch.optim.Adam([{"params": weights}, {"params": others, "lr": 0.5}], lr=1.0)
    opt = Mechanic(base)
    sched = torch.optim.lr_scheduler.StepLR(base, step_size=7, gamma=0.5)
    return opt, sched


def _train(model, opt, sched, steps, dtype):
    for t in steps:
        x, y = _batch(t, dtype)
        opt.zero_grad()
        loss = ((model[2](model[1](model[0](x))) - y) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_is_bitwise(dtype, tmp_path):
    model_a = _model(dtype)
    opt_a, sched_a = _build(model_a)
    _train(model_a, opt_a, sched_a, range(15), dtype)

    path = tmp_path / "ckpt.pt"
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict(),
                "sched": sched_a.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)

    model_b = _model(dtype, seed=123)  # different weights: everything must come from ckpt
    opt_b, sched_b = _build(model_b)
    model_b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["opt"])
    sched_b.load_state_dict(ckpt["sched"])

    _train(model_a, opt_a, sched_a, range(15, 30), dtype)
    _train(model_b, opt_b, sched_b, range(15, 30), dtype)

    assert opt_a.scale == opt_b.scale
    assert opt_a.tuner_state == opt_b.tuner_state
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(pa, pb), name
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    flat = [p for group in opt_a.param_groups for p in group["params"]]
    unused = next(i for i, p in enumerate(flat) if p is model_a.unused)
    assert unused not in sa["state"]  # never had a gradient: no state
    assert len(sa["state"]) == len(flat) - 1
    for index, state in sa["state"].items():
        for key, value in state.items():
            other = sb["state"][index][key]
            if isinstance(value, torch.Tensor):
                assert value.dtype == other.dtype and torch.equal(value, other), (index, key)
            else:
                assert value == other, (index, key)
    for index, state in sa["base"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, sb["base"]["state"][index][key]), (index, key)
    assert opt_b.param_groups[1]["lr"] == opt_a.param_groups[1]["lr"] == 0.5 * 0.5 ** 4


def test_bf16_state_keeps_float32_master():
    model = _model(torch.bfloat16)
    opt, sched = _build(model)
    _train(model, opt, sched, range(3), torch.bfloat16)
    state = opt.state_dict()["state"][0]
    assert state["offset"].dtype == torch.float32
    assert state["master"].dtype == torch.float32
    assert torch.equal(state["master"].to(torch.bfloat16), model[0].weight)


def test_load_state_dict_rejects_mismatch_without_changes():
    model = _model()
    opt, sched = _build(model)
    _train(model, opt, sched, range(3), torch.float32)
    good = opt.state_dict()
    before = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()
              if isinstance(v, torch.Tensor)}
    scale = opt.scale

    bad = dict(good, state={0: dict(good["state"][0], offset=torch.zeros(2, 2))})
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    bad = dict(good, tuner=dict(good["tuner"], s=torch.zeros(3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="tuner"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing key"):
        opt.load_state_dict({"state": {}})
    assert opt.scale == scale
    for key, value in before.items():
        assert torch.equal(opt.state[model[0].weight][key], value)


def test_x_ref_is_taken_at_the_first_step_not_at_construction():
    """Load 'pretrained' weights after building the optimizer; the first step
    must start from them: x_1 = x_pre - S_1 * g with SGD (lr 1) as base."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6))
    opt = Mechanic(torch.optim.SGD([w], lr=1.0))
    pretrained = torch.linspace(-1.0, 1.0, 6)
    with torch.no_grad():
        w.copy_(pretrained)
    target = torch.full((6,), 3.0)
    loss = 0.5 * ((w - target) ** 2).sum()
    loss.backward()
    grad = w.grad.clone()
    opt.step()
    assert opt.scale == pytest.approx(1e-6, rel=1e-12)
    torch.testing.assert_close(w.detach(), pretrained - opt.scale * grad, rtol=0, atol=1e-12)

    # Second step: x_2 = x_ref + S_2 (Delta_1 + u_1), Delta_1 = (x_1 - x_ref)/(S_1 + eps).
    x1, s1 = w.detach().clone(), opt.scale
    opt.zero_grad()
    (0.5 * ((w - target) ** 2).sum()).backward()
    g1 = w.grad.clone()
    opt.step()
    delta1 = (x1 - pretrained) / (s1 + 1e-8)
    torch.testing.assert_close(w.detach(), pretrained + opt.scale * (delta1 - g1),
                               rtol=1e-6, atol=1e-9)


def test_param_groups_are_the_base_optimizers():
    model = _model()
    opt, sched = _build(model)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.defaults is opt.base_optimizer.defaults
    assert opt.hyperparameters == {"weight_decay": 1e-2, "eps": 1e-8, "s_init": 1e-6,
                                   "num_betas": 6}
    extra = torch.nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    assert opt.base_optimizer.param_groups[-1]["params"] == [extra]
    assert opt.base_optimizer.param_groups[-1]["betas"] == (0.9, 0.999)  # base defaults
    _train(model, opt, sched, range(7), torch.float32)  # StepLR(step_size=7, gamma=0.5)
    assert opt.param_groups[0]["lr"] == 0.5
    assert opt.param_groups[1]["lr"] == 0.25


def test_constructor_validation():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError):
        Mechanic([w])
    with pytest.raises(ValueError):
        Mechanic(torch.optim.SGD([w], lr=1.0), s_init=0.0)
    with pytest.raises(ValueError):
        Mechanic(torch.optim.SGD([w], lr=1.0), num_betas=0)
    with pytest.raises(ValueError):
        Mechanic(torch.optim.SGD([w], lr=1.0), eps=-1.0)
    opt = Mechanic(torch.optim.SGD([w], lr=1.0), num_betas=3, s_init=1e-5)
    assert opt.scale == pytest.approx(3e-5)
    assert "Mechanic(" in repr(opt) and "SGD" in repr(opt)


def test_mixed_dtypes_and_deepcopy():
    import copy

    torch.manual_seed(0)
    fp32 = torch.nn.Linear(3, 2)
    bf16 = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt = Mechanic(torch.optim.Adam([{"params": fp32.parameters()},
                                     {"params": bf16.parameters()}], lr=1.0))
    for t in range(5):
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(t))
        opt.zero_grad()
        (fp32(x).pow(2).sum() + bf16(x.bfloat16()).float().pow(2).sum()).backward()
        opt.step()
    assert set(opt.state[fp32.weight]) == {"offset", "offset_scale"}
    assert opt.state[fp32.weight]["offset"].dtype == torch.float32
    assert set(opt.state[bf16.weight]) == {"offset", "offset_scale", "master"}

    twin = copy.deepcopy(opt)
    assert twin.scale == opt.scale
    assert twin.param_groups is twin.base_optimizer.param_groups
    assert twin.tuner_state == opt.tuner_state
