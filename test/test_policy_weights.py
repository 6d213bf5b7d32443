"""policy_node's weights intake alone (no node): which PolicyWeights are new, refusals and the swap bookkeeping;
and the planner's double buffer for distilled layers (staged into a standby network, the two networks exchanged
between chunks). The verification of the payload itself is wire.weights' (test_wire.py); the whole path runs in
test_policy_node.py and test_distill_stack.py, the planner process's in test_planner_process.py."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.chunk_loop import PlanRequest
from mechanic_rl_ros.control.history import ObsHistory
from mechanic_rl_ros.msg import PolicyWeights
from mechanic_rl_ros.nodes.policy_weights import WeightsIntake
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
from mechanic_rl_ros.policy.checkpoint import CheckpointMismatchError
from mechanic_rl_ros.rl.distill import trained_names
from fixtures_policy import random_obs, tiny_config


def intake(version: int = 3):
    problems, lines = [], []
    log = SimpleNamespace(info=lines.append, debug=lines.append)
    w = WeightsIntake(SimpleNamespace(ft_net=None), None, "arch", {}, lambda: 10.0, log,
                      lambda key, text: problems.append((key, text)))
    w.planner = SimpleNamespace(version=version)
    return w, problems, lines


def message(version: int, sha256: str = "ab" * 32) -> PolicyWeights:
    msg = PolicyWeights(version=version, sha256=sha256)
    msg.header.stamp.sec = 9
    return msg


def test_the_running_version_again_is_nothing_to_do():
    w, problems, lines = intake(version=3)
    w.on_message(message(3))
    assert not problems and w.counts == {"weights_adopted": 0, "weights_rejected": 0}
    assert "already running" in lines[0]


def test_an_older_version_is_refused_naming_the_field():
    w, problems, _ = intake(version=3)
    w.running_sha256 = "cd" * 32
    w.on_message(message(2))
    assert w.counts["weights_rejected"] == 1
    key, text = problems[0]
    assert key == "weights" and "version: got 2" in text and "keeping version 3" in text


def test_a_swap_records_its_timing_and_a_failed_one_is_counted():
    w, problems, lines = intake(version=3)
    w.staged[4] = (9.5, "ef" * 32)
    w.on_swap(4, None)
    assert w.running_sha256 == "ef" * 32 and w.counts["weights_adopted"] == 1
    assert w.timing["swapped_ms"] == 500.0 and "now running policy version 4" in lines[-1]
    w.staged[5] = (9.9, "00" * 32)
    w.on_swap(5, RuntimeError("bad tensor"))
    assert w.counts["weights_rejected"] == 1 and w.running_sha256 == "ef" * 32 and "bad tensor" in problems[0][1]


# --- the planner's double buffer for distilled layers (partial): staged into a standby network, swapped whole ---

LAYERS = ("encoders", "unet.final")


def tiny_policy() -> DiffusionPolicy:
    torch.manual_seed(0)
    return DiffusionPolicy(tiny_config()).eval()


def request(policy: DiffusionPolicy, index: int = 0) -> PlanRequest:
    obs = random_obs(policy.cfg, 1, seed=index)
    h = ObsHistory.for_policy(policy)
    for t in range(policy.cfg.obs_horizon):
        h.push({"images": {"scene": obs["images"]["scene"][0, t]}, "qpos": obs["qpos"][0, t],
                "gripper": obs["gripper"][0, t]})
    return PlanRequest(h.stacked(), {}, np.zeros(policy.cfg.obs_horizon), index, 1, 3)


def layers(policy: DiffusionPolicy, shift: float, prefixes=LAYERS) -> dict[str, torch.Tensor]:
    """New values for the layers under ``prefixes``: the policy's own plus ``shift``."""
    params = dict(policy.net.named_parameters())
    return {k: params[k].detach() + shift for k in trained_names(policy.net, prefixes)}


def values(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def reference_chunk(policy: DiffusionPolicy, tensors, req: PlanRequest, seed: int, call: int):
    """The chunk a fresh copy of ``policy`` with ``tensors`` put in by load_partial plans as call ``call``."""
    fresh = copy.deepcopy(policy)
    fresh.load_partial(tensors)
    planner = PolicyPlanner(fresh, seed=seed)
    planner.calls = call - 1
    return planner(req)


def test_staged_layers_serve_only_after_the_swap_and_plan_what_load_partial_plans():
    policy = tiny_policy()
    original = copy.deepcopy(policy)
    reports = []
    planner = PolicyPlanner(policy, seed=3, partial=True, on_weights=lambda v, e: reports.append((v, e)))
    req = request(policy)
    assert policy.standby_net() is None  # built at the first staging, not before
    before = values(policy.net)
    first = policy.predict_chunk(req.history, seed=1)
    new = layers(policy, 0.05)
    assert planner.stage_weights(new, 1, 0)
    # staged, not in service: the active network and what inference gives are unchanged
    assert same(values(policy.net), before) and planner.version == 0 and not reports
    np.testing.assert_array_equal(policy.predict_chunk(req.history, seed=1), first)
    standby = policy.standby_net()
    assert all(torch.equal(dict(standby.named_parameters())[k], v) for k, v in new.items())
    active = policy.net
    chunk = planner(req)
    assert reports == [(1, None)] and planner.version == chunk.version == 1
    assert policy.net is standby and policy.standby_net() is active  # exchanged, the old one is the next standby
    assert planner.swap_seconds < 0.01
    params = dict(policy.net.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in new.items())
    assert not np.array_equal(policy.predict_chunk(req.history, seed=1), first)
    # exactly what a fresh policy with the same layers loaded by load_partial plans with the same seed
    ref = reference_chunk(original, new, req, seed=3, call=1)
    np.testing.assert_array_equal(chunk.actions, ref.actions)
    np.testing.assert_array_equal(chunk.decision.chain, ref.decision.chain)
    # the next plan, no staging in between: no swap, the same network
    planner(request(policy, 1))
    assert policy.net is standby and reports == [(1, None)]


def test_the_standby_holds_only_the_trained_layers_and_shares_everything_else():
    policy = tiny_policy()
    planner = PolicyPlanner(policy, partial=True)
    names = set(trained_names(policy.net, ("unet.final",)))  # not the first parameter: that one is shared
    first = next(iter(policy.net.named_parameters()))[0]
    assert first not in names
    for version in (1, 2, 3):
        assert planner.stage_weights(layers(policy, 0.01 * version, ("unet.final",)), version, 0)
        active, standby = policy.net, policy.standby_net()
        own = {k for k, p in standby.named_parameters() if p is not dict(active.named_parameters())[k]}
        assert own == names
        assert all(p.data_ptr() != dict(active.named_parameters())[k].data_ptr()
                   for k, p in standby.named_parameters() if k in names)
        assert all(a is b for a, b in zip(standby.buffers(), active.buffers()))
        own_bytes = sum(p.numel() * p.element_size() for k, p in standby.named_parameters() if k in own)
        all_bytes = sum(p.numel() * p.element_size() for p in active.parameters())
        assert own_bytes == sum(v.numel() * v.element_size() for v in layers(policy, 0, ("unet.final",)).values())
        assert own_bytes < all_bytes / 4
        planner._swap()
        assert planner.version == version
        # the cache of parameters by name follows the network in service, though the first parameter is shared
        assert all(a is b for a, b in zip(policy._named_parameters().values(), policy.net.parameters()))
        assert all(a is b for a, b in zip(policy._named_parameters(policy.standby_net()).values(),
                                          policy.standby_net().parameters()))
    # the policy's own state is that of the network in service; the standby is no part of it
    name = sorted(names)[0]
    assert policy.state_dict().keys() == DiffusionPolicy(tiny_config()).state_dict().keys()
    assert policy.state_dict()[f"net.{name}"].data_ptr() == dict(policy.net.named_parameters())[name].data_ptr()


@pytest.mark.parametrize("bad", ["shape", "name", "dtype"])
def test_a_refused_staging_changes_neither_network_and_is_reported(bad):
    policy = tiny_policy()
    reports = []
    planner = PolicyPlanner(policy, partial=True, on_weights=lambda v, e: reports.append((v, e)))
    good = layers(policy, 0.05)
    assert planner.stage_weights(good, 1, 0)
    active, standby = values(policy.net), values(policy.standby_net())
    wrong = layers(policy, 0.5)  # a whole staging, good tensors first, the bad one last: nothing is written
    name = sorted(wrong)[-1]
    if bad == "shape":
        wrong[name] = torch.zeros(3)
    elif bad == "dtype":
        wrong[name] = wrong[name].double()
    else:
        name = "unet.final.9.weight"
        wrong[name] = torch.zeros(1)
    assert not planner.stage_weights(wrong, 2, 0)
    assert len(reports) == 1 and reports[0][0] == 2 and isinstance(reports[0][1], CheckpointMismatchError)
    assert repr(name) in str(reports[0][1])
    assert same(values(policy.net), active) and same(values(policy.standby_net()), standby)
    # what was staged before the refusal is still staged and swapped in
    planner._swap()
    assert planner.version == 1 and reports[-1] == (1, None)
    params = dict(policy.net.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in good.items())


def test_the_newest_staging_wins_and_a_staging_of_other_layers_rebuilds_the_standby():
    policy = tiny_policy()
    reports = []
    planner = PolicyPlanner(policy, partial=True, on_weights=lambda v, e: reports.append((v, e)))
    older, newer = layers(policy, 0.1), layers(policy, 0.2)
    assert planner.stage_weights(older, 1, 0) and planner.stage_weights(newer, 2, 0)
    planner._swap()
    assert reports == [(2, None)] and planner.version == 2
    params = dict(policy.net.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in newer.items())
    # another set of layers: the standby is rebuilt for it, from the network in service
    other = layers(policy, 0.3, ("unet.up",))
    assert planner.stage_weights(other, 3, 0)
    standby = policy.standby_net()
    own = {k for k, p in standby.named_parameters() if p is not dict(policy.net.named_parameters())[k]}
    assert own == set(other)
    planner._swap()
    params = dict(policy.net.named_parameters())
    assert planner.version == 3 and reports[-1] == (3, None)
    assert all(torch.equal(params[k], v) for k, v in other.items())
    assert all(torch.equal(params[k], v) for k, v in newer.items())  # the layers of version 2 stay
    # and back to the first set: the exchange keeps working
    again = layers(policy, 0.4)
    assert planner.stage_weights(again, 4, 0)
    planner._swap()
    params = dict(policy.net.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in {**other, **again}.items())


def test_the_swap_never_waits_for_a_staging_in_progress():
    policy = tiny_policy()
    reports = []
    planner = PolicyPlanner(policy, partial=True, on_weights=lambda v, e: reports.append((v, e)))
    assert planner.stage_weights(layers(policy, 0.1), 1, 0)
    active = policy.net
    with planner._lock:  # a staging being written at this instant
        planner._swap()
        assert policy.net is active and planner.version == 0 and not reports
    planner._swap()  # the next plan swaps it in
    assert policy.net is not active and planner.version == 1 and reports == [(1, None)]


def test_a_copied_planner_leaves_the_standby_behind_and_builds_its_own():
    # deepcopy goes through __getstate__, as the planner process's spawn does, without unpickling anything
    policy = tiny_policy()
    planner = PolicyPlanner(policy, seed=4, partial=True)
    assert planner.stage_weights(layers(policy, 0.1), 1, 0)
    planner._swap()
    assert planner.stage_weights(layers(policy, 0.2), 2, 0)
    copied = copy.deepcopy(planner)
    assert copied.policy.standby_net() is None and copied._pending is None and copied.version == 1
    new = layers(copied.policy, 0.3)
    assert copied.stage_weights(new, 3, 0)
    own = {k for k, p in copied.policy.standby_net().named_parameters()
           if p is not dict(copied.policy.net.named_parameters())[k]}
    assert own == set(new)
    copied._swap()
    params = dict(copied.policy.net.named_parameters())
    assert copied.version == 3 and all(torch.equal(params[k], v) for k, v in new.items())
