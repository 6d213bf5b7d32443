"""The one act-observe-replan loop: chunk hand-over, leads, blocks, and the same actions on every path."""
from pathlib import Path

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.chunk_loop import AdaptiveMargin, BackgroundPlanning, Chunk, ChunkLoop, run_episode
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "lift_pretrained"


def _chunk(start, index, n=8):
    return Chunk(start + np.arange(n)[:, None] * np.ones((1, 8)), index)


def _loop(margin):
    loop = ChunkLoop(obs_horizon=2, lowdim_keys=("qpos",), replan_margin=margin)
    loop.reset(episode=3)
    return loop


def test_chunks_hand_over_without_gap_and_replan_early():
    loop = _loop(2)
    obs = {"qpos": np.zeros(7)}
    loop.observe(obs)
    assert loop.wants_plan() and loop.pop() is None
    req = loop.request()
    assert (req.index, req.lead, req.episode) == (0, 0, 3)
    loop.offer(_chunk(0, req.index))
    got = [loop.pop()[0][0] for _ in range(6)]
    assert loop.remaining() == 2 and loop.wants_plan() and not loop.wants_plan(in_flight=True)
    req = loop.request()
    assert (req.index, req.lead) == (1, 2), "planned with 2 actions of the current chunk still to run"
    loop.offer(_chunk(100, req.index))
    assert not loop.wants_plan(), "a chunk is already waiting"
    for _ in range(4):
        action, chunk, k = loop.pop()
        got.append(action[0])
    assert got == [0, 1, 2, 3, 4, 5, 6, 7, 100, 101] and chunk.index == 1 and k == 1


def test_a_late_chunk_is_bridged_by_the_tail_of_the_current_one_only_when_asked():
    """The next chunk late: with ``extend`` the current chunk's predicted tail runs on (positions 8, 9, ...),
    then the late chunk starts at its first action; without, the loop has nothing (the arm holds)."""
    loop = _loop(2)
    loop.observe({"qpos": np.zeros(7)})
    tail = 8 + np.arange(3)[:, None] * np.ones((1, 8))
    first = Chunk(np.arange(8)[:, None] * np.ones((1, 8)), loop.request().index, tail=tail)
    loop.offer(first)
    for _ in range(8):
        loop.pop()
    assert loop.remaining() == 0 and loop.pop() is None, "no extension unless asked"
    got = [(a[0], k) for a, _, k in (loop.pop(extend=True) for _ in range(2))]
    assert got == [(8, 8), (9, 9)] and loop.remaining() == 0 and loop.wants_plan()
    loop.offer(_chunk(100, 1))
    action, chunk, k = loop.pop(extend=True)
    assert (action[0], chunk.index, k) == (100, 1, 0), "the late chunk starts at its first action"
    for _ in range(7):
        loop.pop()
    assert loop.pop(extend=True) is None, "a chunk without a tail: nothing to run on"
    bare = _loop(0)
    bare.observe({"qpos": np.zeros(7)})
    bare.offer(Chunk(np.zeros((1, 8)), bare.request().index, tail=np.ones((1, 8))))
    bare.pop()
    assert bare.pop(extend=True)[2] == 1 and bare.pop(extend=True) is None, "the tail used up: the arm holds"


def test_background_planning_runs_on_the_tail_while_the_next_plan_is_late():
    """The policy node's path on the wall clock: the second plan blocks until released; meanwhile the tick
    runs the first chunk's tail, then holds (None) once the tail is used up; the late chunk then starts."""
    import threading

    release = threading.Event()

    def planner(req):
        if req.index > 0:
            release.wait(30)
        return Chunk(100 * req.index + np.arange(8)[:, None] * np.ones((1, 8)), req.index,
                     tail=100 * req.index + 8 + np.arange(2)[:, None] * np.ones((1, 8)))

    obs = {"qpos": np.zeros(7)}
    for extend, expected in ((True, [8, 9, None]), (False, [None, None, None])):
        release.clear()
        planning = BackgroundPlanning(_loop(1), planner, extend=extend)
        try:
            planning.reset(episode=0)
            assert planning.tick(obs, wait=5.0)[0][0] == 0
            for _ in range(7):
                planning.tick(obs)
            assert planning.in_flight, "the next plan was asked for with one action left"
            got = [None if (item := planning.tick(obs)) is None else item[0][0] for _ in range(3)]
            assert got == expected
            release.set()
            item = None
            for _ in range(100):
                planning.poll(wait=0.1)
                if planning.loop.next is not None:
                    item = planning.tick(obs)
                    break
            assert item is not None and (item[0][0], item[1].index, item[2]) == (100, 1, 0)
        finally:
            release.set()
            planning.close()


def test_a_plan_of_the_last_episode_does_not_cost_the_next_its_first_tick():
    """An episode starts while the last episode's plan is still running: the tick that waits for its first
    chunk drops that plan when it arrives and asks for its own within the same wait."""
    import threading

    release = threading.Event()

    def planner(req):
        if req.episode == 0:
            release.wait(30)
        return Chunk(100 * req.episode + np.arange(8)[:, None] * np.ones((1, 8)), req.index)

    obs = {"qpos": np.zeros(7)}
    planning = BackgroundPlanning(_loop(1), planner)
    try:
        planning.reset(episode=0)
        assert planning.tick(obs) is None and planning.in_flight  # episode 0's plan runs on
        planning.reset(episode=1)
        threading.Timer(0.2, release.set).start()
        item = planning.tick(obs, wait=10.0)
        assert item is not None and (item[0][0], item[1].index, item[2]) == (100, 0, 0)
    finally:
        release.set()
        planning.close()


def test_the_policy_tail_is_the_prediction_after_the_executed_actions():
    policy = DiffusionPolicy.from_checkpoint(SHIPPED)
    cfg = policy.cfg
    predicted = np.arange(cfg.pred_horizon)[:, None] * np.ones((1, cfg.action_dim))
    for lead in range(cfg.max_lead + 1):
        run, tail = policy.executable(predicted, lead), policy.tail(predicted, lead)
        assert len(run) == cfg.action_horizon and len(tail) == cfg.max_lead - lead
        np.testing.assert_array_equal(np.concatenate([run, tail])[:, 0],
                                      np.arange(cfg.action_start + lead, cfg.pred_horizon))


def test_the_adaptive_margin_covers_the_measured_inference_time():
    adapt = AdaptiveMargin(floor=2, ceiling=7, control_dt=0.1)
    assert adapt.margin() == 2  # nothing measured yet: the configured margin
    for _ in range(50):
        adapt.record(0.05)
    assert adapt.margin() == 2  # fast inference never plans later than configured
    for _ in range(10):
        adapt.record(0.31)  # 10 of the last 50 slow: the 95th percentile is 0.31 s, + a quarter period
    assert adapt.margin() == 4
    for _ in range(50):
        adapt.record(3.0)
    assert adapt.margin() == 7  # never beyond the policy's largest lead
    with pytest.raises(ValueError, match="replan_margin"):
        AdaptiveMargin(floor=8, ceiling=7, control_dt=0.1)


def test_background_planning_plans_earlier_once_inference_is_slow():
    """A planner that takes 0.25 s with 0.1 s ticks: after the first chunk the margin is 3, and the next
    chunk is requested with 3 actions of the current one left (its lead)."""
    import time

    leads = []

    def slow(req):
        leads.append(req.lead)
        time.sleep(0.25)
        return _chunk(10 * req.index, req.index)

    planning = BackgroundPlanning(_loop(1), slow, adapt=AdaptiveMargin(1, 7, 0.1))
    try:
        planning.reset(episode=0)
        assert planning.tick({"qpos": np.zeros(7)}, wait=5.0) is not None
        for _ in range(7):
            planning.tick({"qpos": np.zeros(7)})
            if planning.in_flight:
                break
        planning.poll(wait=5.0)  # (the worker records the lead it was asked for)
        assert planning.loop.replan_margin == 3 and leads == [0, 3]
    finally:
        planning.close()


def test_history_and_stamps_are_padded_with_the_first_observation():
    loop = _loop(0)
    loop.observe({"qpos": np.full(7, 1.0)}, stamp=5.0)
    req = loop.request()
    np.testing.assert_array_equal(req.history["qpos"], np.ones((2, 7)))
    np.testing.assert_array_equal(req.stamps, [5.0, 5.0])


def test_drain_runs_up_to_the_next_planning_tick():
    for margin, first, then in ((0, 8, 8), (3, 5, 8)):
        loop = _loop(margin)
        loop.observe({"qpos": np.zeros(7)})
        loop.offer(_chunk(0, loop.request().index))
        assert len(loop.drain()) == first
        assert loop.wants_plan()
        loop.offer(_chunk(100, loop.request().index))
        block = loop.drain()
        assert len(block) == then and block[0][0][0] == (first if margin else 100)


def test_drain_without_a_chunk_is_an_error():
    with pytest.raises(RuntimeError, match="plan first"):
        _loop(0).drain()


@pytest.mark.parametrize("margin", [0, 2])
def test_headless_and_policy_node_paths_give_the_same_actions(margin):
    """run_episode (evaluation, demonstrations) and BackgroundPlanning (the policy node's tick, planning on a
    worker thread) drive the same ChunkLoop with the same planner: same seed, same actions, step for step."""
    from mechanic_rl_ros.sim import make_env

    torch.set_num_threads(1)
    policy = DiffusionPolicy.from_checkpoint(SHIPPED).eval()
    cfg = policy.cfg
    env = make_env(task="lift", render=True, cameras=cfg.cameras, image_size=cfg.image_size, seed=7)
    seed, steps = 100_003, 30

    headless = []
    planner = PolicyPlanner(policy, stochastic=True, noise_clip=3.0, seed=1)
    run_episode(env, ChunkLoop.for_policy(policy, margin), planner, seed=seed,
                on_action=lambda o, a: headless.append(a) if len(headless) < steps else None)

    node = []
    planning = BackgroundPlanning(ChunkLoop.for_policy(policy, margin),
                                  PolicyPlanner(policy, stochastic=True, noise_clip=3.0, seed=1))
    try:
        obs, _ = env.reset(seed=seed)
        planning.reset(episode=0)
        for _ in range(steps):
            action, chunk, k = planning.tick(obs, wait=60.0)
            node.append(np.asarray(action, dtype=np.float64))
            obs = env.step(node[-1])[0]
    finally:
        planning.close()
        env.close()
    assert len(headless) == steps
    np.testing.assert_array_equal(np.stack(node), np.stack(headless))


def test_after_gives_the_rest_of_the_chunk_then_its_tail():
    actions, tail = np.arange(4)[:, None] * np.ones((1, 8)), 10 + np.arange(3)[:, None] * np.ones((1, 8))
    chunk = Chunk(actions, 0, tail=tail)
    assert chunk.after(0)[:, 7].tolist() == [1, 2, 3, 10, 11, 12]
    assert chunk.after(3)[:, 7].tolist() == [10, 11, 12]
    assert chunk.after(4)[:, 7].tolist() == [11, 12]  # running on the tail
    assert Chunk(actions, 0).after(2)[:, 7].tolist() == [3]
