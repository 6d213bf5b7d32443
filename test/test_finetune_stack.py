"""The whole stack, as the user runs it (`mechanic-rl finetune`, the venv twin
of finetune.launch.py): sim + camera + policy + reward + learner as separate
processes on lock-step sim time, with a tiny policy so that it runs on CI.
The assertions are the ones test_finetune_launch.py makes under ros2 launch
(test/stack_checks.py)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import stack_checks as checks
from rosenv import REPO, fresh_domain_id, ros_env
from stack_checks import StackObserver

from mechanic_rl_ros.msg import EpisodeEvent
from stack_fixtures import make_checkpoint

EPISODES = 10
#: a node log line at WARN level or above, or a Python traceback / warning
PROBLEM = re.compile(r"^\[(WARN|ERROR|FATAL)\]|^Traceback|Warning: ")
#: a stale input making the arm hold: a real event, not a start-up flaw -- seen once in four runs on a loaded
#: 2-core machine, in the first episode, while the first (slowest) inferences run; and a first command lost
#: while DDS matched the controller's subscription (the observer of these tests already subscribes to the
#: command topic, so policy_node may start sending before sim_node's subscription is matched)
UNDER_LOAD = re.compile(r"\[policy_node\]: (holding: \S+ is [0-9.]+ s old|.*a message did not reach it)")
#: one critic-only warm-up update (config/rl.yaml: 2) publishes version 0 again, as every real start does
FAST_RL = {"learner": {"update_epochs": 2, "critic_warmup_updates": 1}}


def fast_settings(tmp: Path, episodes: int = EPISODES, algorithm: str = "dppo") -> list[str]:
    """Runner options that make a short, CI-sized run: short episodes, small batches, quick updates.
    ``algorithm`` dppo: DPPO on batches of 3 decisions; select (the stack's default): the selection
    learner's first gradient steps after 4 decisions, a critic published every 10 steps."""
    common = ["--set", "reward_node.max_steps=24", "--set", f"reward_node.max_episodes={episodes}"]
    if algorithm == "select":
        return common + ["--set", "learner_node.warmup_decisions=4", "--set", "learner_node.critic_publish_every=10",
                         "--set", "learner_node.critic_checkpoint_every=50"]
    (tmp / "rl_fast.yaml").write_text(json.dumps(FAST_RL))
    return common + ["--set", "policy_node.algorithm=dppo", "--set", "learner_node.algorithm=dppo",
                     "--set", "learner_node.batch_size=3", "--set", "learner_node.min_batch_size=1",
                     "--set", "learner_node.checkpoint_every=1",
                     "--set", f"learner_node.rl_config={tmp / 'rl_fast.yaml'}"]


def held_episodes(run_dir: Path) -> set[int]:
    """The episodes of the decisions in the buffer the learner saved at shutdown (``learner/buffer.npz``);
    empty when it held none, as an on-policy learner that consumed every ended episode before the stop does."""
    from mechanic_rl_ros.rl.buffer import RolloutBuffer

    arrays, _ = RolloutBuffer.load(run_dir / "learner" / "buffer.npz").state_dict()
    return {int(e) for e in arrays["episode"]} if "episode" in arrays else set()


def stop(runner: subprocess.Popen) -> int | None:
    """Ctrl-C to the runner, as a user stops it; its exit code (None: killed after 120 s)."""
    runner.send_signal(signal.SIGINT)
    try:
        return runner.wait(120)
    except subprocess.TimeoutExpired:
        runner.kill()
        return None


@pytest.mark.slow
def test_finetune_runner_learns_and_shuts_down_cleanly(tmp_path):
    """The default stack (value-guided selection): the learner trains a critic on the decisions the policy
    node sends (features, 8 proposals, the choice), the policy node hot-swaps each published critic and
    chooses with it; the run stops cleanly with a checkpoint whose critic `mechanic-rl eval --critic` runs.
    (DPPO in the stack: test_finetune_faults.py, the reflex test below, test_shutdown_signals.py.)"""
    make_checkpoint(tmp_path / "ckpt")
    domain = fresh_domain_id()
    log = open(tmp_path / "runner.log", "wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "mechanic_rl_ros.cli", "finetune", f"checkpoint:={tmp_path / 'ckpt'}",
         f"run_dir:={tmp_path / 'run'}", *fast_settings(tmp_path, algorithm="select")],
        cwd=REPO, env=ros_env(domain), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    obs = StackObserver(domain)
    text = (tmp_path / "runner.log").read_text
    try:
        checks.wait_for_learning(obs, versions=3, timeout=900)
        assert obs.spin_until(lambda: obs.ended_episodes() >= EPISODES, 600), text()[-5000:]
        checks.check_every_step_reached_learner(obs)
        checks.check_command_rate(obs, rate=10.0)
        checks.check_versions_adopted(obs, versions=3)
        checks.check_resets(obs)
        checks.check_first_action_at_reset(obs)
        checks.check_no_reflex(obs, tmp_path / "run" / "logs")
    finally:
        obs.close()
        code = stop(runner)
    out = text()
    assert code == 0, out[-5000:]
    assert "stopped: sim_node=0, camera_node=0, policy_node=0, reward_node=0, learner_node=0" in out, out[-3000:]
    assert f"run_dir: {tmp_path / 'run'}" in out
    # a normal run, start to shutdown, logs nothing a user should worry about
    problems = [f"{log.name}: {line}" for log in sorted((tmp_path / "run" / "logs").glob("*.log"))
                for line in log.read_text().splitlines() if PROBLEM.search(line) and not UNDER_LOAD.search(line)]
    assert not problems, "\n".join(problems)
    assert "[progress] episode" in out and "Mechanic scale" in out and "robot min" in out
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 10_000
    # every decision the learner got carried the selection payload; rows reached the replay, none refused
    learner = obs.diagnostics["learner_node"]
    assert learner["decisions_refused"] == "0" and learner["stream_refused_shape"] == "0", learner
    assert int(learner["replay_added"]) >= 4 and int(learner["num_updates"]) >= 30, learner
    from mechanic_rl_ros.wire.transition import decision_from_transition
    made = [decision_from_transition(t) for t in obs.transitions if t.chunk_step == 0 and t.policy_version > 0]
    assert made and all(d.proposals.shape[0] == 8 and 0 <= d.chosen < 8 for d in made), "no critic's decision"
    saved = tmp_path / "run" / "learner"
    assert json.loads((saved / "node_state.json").read_text())["algorithm"] == "select"
    from mechanic_rl_ros.rl.selection import SelectLearner
    assert SelectLearner.load(saved / "learner").num_updates >= int(learner["num_updates"])
    ev = subprocess.run([sys.executable, "-m", "mechanic_rl_ros.cli", "eval", "--checkpoint", str(tmp_path / "ckpt"),
                         "--critic", str(saved / "critic"), "--episodes", "1", "--video-episodes", "0",
                         "--out", str(tmp_path / "eval")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0 and "8 proposals" in ev.stdout, ev.stdout + ev.stderr


@pytest.mark.slow
def test_shipped_policy_lifts_the_cube_through_the_stack(tmp_path):
    """The pretrained lift policy, run deterministically by the stack, succeeds as it does in the simulator
    (74 % over 50 seeds in `mechanic-rl eval`). The policy plans each chunk `replan_margin` control periods
    before it runs; executing the actions predicted for the instant of the observation instead of those for
    the instants they run at made it 0 of 8 here. Its observations are those of the headless environment
    (:func:`stack_checks.check_headless_twin`)."""
    episodes = 8
    domain = fresh_domain_id()
    log = open(tmp_path / "runner.log", "wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "mechanic_rl_ros.cli", "finetune", f"run_dir:={tmp_path / 'run'}",
         f"episodes:={episodes}", "--set", "policy_node.stochastic=false", "--set", "policy_node.replan_margin=2"],
        cwd=REPO, env=ros_env(domain), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    obs = StackObserver(domain)
    text = (tmp_path / "runner.log").read_text
    try:
        assert obs.spin_until(lambda: obs.ended_episodes() >= episodes, 900), text()[-5000:]
        checks.check_no_reflex(obs, tmp_path / "run" / "logs")
        # what the policy saw in the stack is what it sees headless (the episode after the first, which runs
        # while torch warms up): same frames, same joint states, same steps
        assert checks.check_headless_twin(obs, 1, replan_margin=2, seed=1001) >= 3
    finally:
        obs.close()
        stop(runner)
    ends = {e.episode: e.event for e in obs.events if e.event in checks.ENDS}
    successes = sum(1 for ev in ends.values() if ev == EpisodeEvent.SUCCESS)
    # the gripper moved through franka_gripper's actions, one goal at a time (sim_node counts overlaps): a lift
    # takes at least one grasp
    sim = checks.sim_node_totals(tmp_path / "run" / "logs" / "sim_node.log")
    assert sim["gripper_goals"] >= successes and sim["gripper_goals_overlapping"] == 0 and sim["reflexes"] == 0, sim
    # 8 of 10 when measured (reset seeds 1000+); two or more of eight: probability 0.965 at a true rate of 0.5,
    # 0.9996 at 0.75
    assert successes >= 2, f"{successes} of {len(ends)} episodes succeeded\n{text()[-3000:]}"


@pytest.mark.slow
def test_an_injected_reflex_aborts_the_episode_and_nothing_of_it_is_learned(tmp_path):
    """A reflex in the middle of an episode (injected in the simulator, as a collision would stop the FR3; as
    franka_ros2 >= 3.3 does, the controllers and the robot state broadcaster go inactive): reward_node sees
    the robot state stop, ends the episode with ABORTED, runs franka_ros2's recovery sequence itself (sim
    mode) and the next episodes run; the learner drops every decision of the aborted episode, and it never
    reaches a batch (the learner only learns from episodes that have ended)."""
    from franka_msgs.msg import FrankaRobotState  # noqa: F401  (the robot state type must exist in the venv)
    from std_srvs.srv import Trigger

    make_checkpoint(tmp_path / "ckpt")
    domain = fresh_domain_id()
    log = open(tmp_path / "runner.log", "wb")
    episodes, broken = 4, 1
    runner = subprocess.Popen(
        [sys.executable, "-m", "mechanic_rl_ros.cli", "finetune", f"checkpoint:={tmp_path / 'ckpt'}",
         f"run_dir:={tmp_path / 'run'}", *fast_settings(tmp_path, episodes)],
        cwd=REPO, env=ros_env(domain), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    obs = StackObserver(domain)
    inject = obs.node.create_client(Trigger, "/sim/inject_reflex")
    text = (tmp_path / "runner.log").read_text
    try:
        # a few steps into the broken episode, the robot stops
        assert obs.spin_until(lambda: sum(t.episode == broken for t in obs.transitions) >= 10, 600), text()[-5000:]
        assert inject.wait_for_service(timeout_sec=10)
        fut = inject.call_async(Trigger.Request())
        assert obs.spin_until(fut.done, 10) and fut.result().success
        aborted = lambda: [e for e in obs.events if e.event == EpisodeEvent.ABORTED]  # noqa: E731
        assert obs.spin_until(lambda: aborted(), 60), text()[-5000:]
        assert [e.episode for e in aborted()] == [broken] and "robot state silent" in aborted()[0].detail
        assert obs.spin_until(lambda: obs.ended_episodes() >= episodes - 1, 600), text()[-5000:]
        assert obs.spin_until(lambda: obs.diagnostics.get("learner_node", {}).get("episodes_aborted") == "1", 30)
        sim = obs.diagnostics["sim_node"]
        assert sim["reflexes"] == "1" and sim["recoveries"] == "1", sim
        reward = obs.diagnostics["reward_node"]
        assert reward["episodes_aborted"] == "1" and reward["recoveries"] == "1", reward
    finally:
        obs.close()
        code = stop(runner)
    assert code == 0, text()[-5000:]
    ends = {e.episode: e.event for e in obs.events if e.event in checks.ENDS}
    assert broken not in ends and set(ends) == {0, 2, 3}, ends
    learner = obs.diagnostics["learner_node"]
    assert int(learner["decisions_dropped_aborted"]) >= 1, learner
    # the checkpoint the learner saved at shutdown holds nothing of the broken episode either
    assert broken not in held_episodes(tmp_path / "run")
    state = json.loads((tmp_path / "run" / "learner" / "node_state.json").read_text())
    assert state["aborted"] == [broken]
