"""policy_node's planner in a child process (PlannerProcess, the wall clock's default): the chunks and
decisions of the planner it carries, weights staged before a plan swapped in before it, weights that do not
fit refused with the planner keeping its own, and a failing plan reported, not fatal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.chunk_loop import PlanRequest
from mechanic_rl_ros.control.history import ObsHistory
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
from mechanic_rl_ros.policy.planner_process import PlannerProcess, PlannerProcessError
from mechanic_rl_ros.rl.selection import CriticSelector, SelectConfig, SelectLearner
from fixtures_policy import random_obs, tiny_config


def _request(policy, index=0):
    obs = random_obs(policy.cfg, 1)
    h = ObsHistory.for_policy(policy)
    for t in range(policy.cfg.obs_horizon):
        h.push({"images": {"scene": obs["images"]["scene"][0, t]}, "qpos": obs["qpos"][0, t],
                "gripper": obs["gripper"][0, t]})
    return PlanRequest(h.stacked(), {}, np.zeros(policy.cfg.obs_horizon), index, 1, 3)


def test_the_process_plans_what_the_planner_plans_and_swaps_weights_between_plans():
    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config()).eval()
    pc = policy.cfg
    scfg = SelectConfig(feat_dim=policy.net.cond_dim, act_dim=pc.action_horizon * pc.action_dim, num_candidates=4,
                        hidden=16)
    here = PolicyPlanner(policy, seed=2, selector=CriticSelector(scfg, policy.arch_id))
    seen = []
    there = PlannerProcess(PolicyPlanner(policy, seed=2, selector=CriticSelector(scfg, policy.arch_id),
                                         on_weights=lambda v, e: seen.append((v, e))))
    try:
        assert there.pid is not None and there.warm_seconds > 0
        reqs = [_request(policy, i) for i in range(3)]
        a, b = here(reqs[0]), there(reqs[0])
        np.testing.assert_allclose(b.actions, a.actions, atol=1e-6)
        np.testing.assert_allclose(b.decision.proposals, a.decision.proposals, atol=1e-6)
        assert b.decision.chosen == a.decision.chosen == 0 and len(there.latencies) == 1
        # a critic staged now is used by the next plan, in both
        critic = {k: v.numpy() for k, v in SelectLearner(scfg).critic.state_dict().items()}
        here.stage_weights(critic, 4, None)
        there.stage_weights(critic, 4, None)
        a, b = here(reqs[1]), there(reqs[1])
        assert there.version == b.version == 4 and seen == [(4, None)]
        assert b.decision.chosen == a.decision.chosen
        np.testing.assert_allclose(b.actions, a.actions, atol=1e-6)
        # weights that do not fit: refused with the reason, the critic of version 4 plays on
        there.stage_weights({"weights.0": np.zeros((1, 2), np.float32)}, 5, None)
        assert there(reqs[2]).version == 4 and there.version == 4
        assert seen[-1][0] == 5 and "critic tensors" in str(seen[-1][1])
    finally:
        there.close()
    with pytest.raises(PlannerProcessError, match="gone"):
        there(reqs[0])


def test_a_plan_that_fails_in_the_process_is_an_error_of_that_plan_only():
    policy = DiffusionPolicy(tiny_config()).eval()
    there = PlannerProcess(PolicyPlanner(policy, seed=1))
    try:
        bad = _request(policy)
        bad.lead = policy.cfg.max_lead + 1
        with pytest.raises(PlannerProcessError, match="lead"):
            there(bad)
        assert there(_request(policy)).actions.shape == (policy.cfg.action_horizon, policy.cfg.action_dim)
    finally:
        there.close()


def test_distilled_layers_through_the_process_are_double_buffered_and_plan_what_load_partial_plans():
    """partial (algorithm distill): the child's weights thread checks staged layers and copies them into its
    standby network; the next plan swaps the networks and plans exactly what a fresh policy with the layers
    put in by load_partial plans; a refusal keeps the layers in service; the newest of two stagings wins; a
    staging of other layers works."""
    import copy

    from mechanic_rl_ros.rl.distill import trained_names

    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config()).eval()
    params = dict(policy.net.named_parameters())

    def layers(shift, prefixes=("encoders", "unet.final")):
        return {k: params[k].detach() + shift for k in trained_names(policy.net, prefixes)}

    def reference(loaded, req, call):
        fresh = copy.deepcopy(policy)
        for tensors in loaded:
            fresh.load_partial(tensors)
        planner = PolicyPlanner(fresh, seed=2)
        planner.calls = call - 1
        return planner(req)

    seen = []
    there = PlannerProcess(PolicyPlanner(copy.deepcopy(policy), seed=2, partial=True,
                                         on_weights=lambda v, e: seen.append((v, e))))
    try:
        reqs = [_request(policy, i) for i in range(5)]
        a = there(reqs[0])
        np.testing.assert_allclose(a.actions, reference([], reqs[0], 1).actions, atol=1e-6)
        first = layers(0.05)
        assert there.stage_weights(first, 1, 0)
        b = there(reqs[1])
        assert seen == [(1, None)] and there.version == b.version == 1 and there.swap_seconds < 0.01
        np.testing.assert_allclose(b.actions, reference([first], reqs[1], 2).actions, atol=1e-6)
        assert not np.allclose(b.actions, reference([], reqs[1], 2).actions, atol=1e-4)
        # refused (a shape that does not fit): reported with the next plan, the layers of version 1 serve on
        wrong = layers(0.5)
        name = sorted(wrong)[-1]
        wrong[name] = torch.zeros(3)
        there.stage_weights(wrong, 2, 0)
        c = there(reqs[2])
        assert c.version == 1 and seen[-1][0] == 2 and name in str(seen[-1][1])
        np.testing.assert_allclose(c.actions, reference([first], reqs[2], 3).actions, atol=1e-6)
        # two stagings before a plan: the newest wins
        there.stage_weights(layers(0.1), 3, 0)
        newest = layers(0.2)
        there.stage_weights(newest, 4, 0)
        d = there(reqs[3])
        assert d.version == 4 and seen[-1] == (4, None) and (3, None) not in seen
        np.testing.assert_allclose(d.actions, reference([newest], reqs[3], 4).actions, atol=1e-6)
        # other layers: the child rebuilds its standby for them; the layers of version 4 stay
        other = layers(0.3, ("unet.up",))
        there.stage_weights(other, 5, 0)
        e = there(reqs[4])
        assert e.version == 5 and seen[-1] == (5, None)
        np.testing.assert_allclose(e.actions, reference([newest, other], reqs[4], 5).actions, atol=1e-6)
    finally:
        there.close()
