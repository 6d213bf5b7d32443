"""Checks of a running fine-tuning stack, shared by the runner-based
integration test (test_finetune_stack.py, runs everywhere) and the
launch_testing test (test_finetune_launch.py, runs under `colcon test` on a
ROS install). Each check takes a :class:`StackObserver` and asserts."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from franka_msgs.msg import FrankaRobotState
from trajectory_msgs.msg import JointTrajectory

from mechanic_rl_ros.msg import EpisodeEvent, LearnerStats, PolicyWeights, Transition
from mechanic_rl_ros.nodes.policy_weights import seconds
from mechanic_rl_ros.wire.robot_state import read_robot_state

from stack_fixtures import EVENTS, HISTORY, LATCHED, Probe

ENDS = (EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT)


class StackObserver(Probe):
    """Records what the stack publishes: commands, transitions, events, weights, stats, diagnostics."""

    def __init__(self, domain: int, command_topic: str = "/fr3_position_trajectory_controller/joint_trajectory"):
        super().__init__(domain, "stack_observer")
        self.commands = self.record(JointTrajectory, command_topic)
        #: every distinct robot mode the robot state reported ("move", "reflex: joint_reflex", ...)
        self.robot_modes: set[str] = set()
        self.node.create_subscription(FrankaRobotState, "/franka_robot_state_broadcaster/robot_state",
                                      lambda m: self.robot_modes.add(read_robot_state(m).describe()), 10)
        self.transitions = self.record(Transition, "/learner/transitions", HISTORY)
        self.events = self.record(EpisodeEvent, "/reward/events", EVENTS)
        self.weights = self.record(PolicyWeights, "/policy/weights", LATCHED)
        self.stats = self.record(LearnerStats, "/learner/stats", 50)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            self.diagnostics[st.name.split(":")[0]] = {kv.key: kv.value for kv in st.values}

    def versions_in_use(self) -> set[int]:
        return {t.policy_version for t in self.transitions}

    def ended_episodes(self) -> int:
        return len({e.episode for e in self.events if e.event in ENDS})


def wait_for_learning(obs: StackObserver, versions: int = 3, timeout: float = 600.0) -> None:
    """Block until the policy has acted with ``versions`` learner versions beyond the pretrained one."""
    ok = obs.spin_until(lambda: len(obs.versions_in_use() - {0}) >= versions, timeout)
    assert ok, (f"only versions {sorted(obs.versions_in_use())} were used in {len(obs.transitions)} transitions; "
                f"weights published: {[w.version for w in obs.weights]}; learner: {obs.diagnostics.get('learner_node')}")


def check_command_rate(obs: StackObserver, rate: float = 10.0) -> None:
    """Consecutive executed steps of an episode are 1/rate apart (in the stack's clock)."""
    by_episode: dict[int, list[float]] = {}
    for t in obs.transitions:
        by_episode.setdefault(t.episode, []).append(seconds(t.header.stamp))
    gaps = np.concatenate([np.diff(v) for v in by_episode.values() if len(v) > 1])
    assert gaps.size > 20, "too few steps to judge the command rate"
    assert abs(np.median(gaps) - 1.0 / rate) < 0.1 / rate, f"median step interval {np.median(gaps):.4f} s"
    # The node's own counters, from one diagnostics message: the command topic is keep-last 10 (what a
    # controller needs), so a test process that falls behind on a loaded machine may miss commands it was sent.
    diag = obs.diagnostics.get("policy_node")
    assert diag, "no diagnostics from policy_node"
    assert int(diag["commands"]) >= int(diag["transitions"]), \
        f"a step was recorded without its command: {diag['commands']} commands, {diag['transitions']} transitions"
    assert obs.commands, "no command reached the command topic"


def check_versions_adopted(obs: StackObserver, versions: int = 3) -> None:
    """>= ``versions`` new weight versions were published and used; versions never go back in an episode."""
    used = sorted(obs.versions_in_use() - {0})
    assert len(used) >= versions, used
    for e in {t.episode for t in obs.transitions}:
        seq = [t.policy_version for t in obs.transitions if t.episode == e]
        assert seq == sorted(seq), f"episode {e} went back to an older policy version: {seq}"


def check_resets(obs: StackObserver) -> None:
    """Episodes end and the next starts only after a reset."""
    done = [e for e in obs.events if e.event == EpisodeEvent.RESET_DONE]
    assert obs.ended_episodes() >= 2 and len(done) >= 3, f"{obs.ended_episodes()} episodes ended, {len(done)} resets"
    episodes = sorted({t.episode for t in obs.transitions})
    assert episodes == list(range(episodes[0], episodes[-1] + 1)), episodes


def check_first_action_at_reset(obs: StackObserver) -> None:
    """On the lock-step simulator an episode's first step is commanded at its reset instant (the START event's
    stamp), where the headless environment acts. A start one control period later is one the simulator waited
    out its idle timeout for (3 wall s per episode, about a third of a stack's wall time) and one the headless
    replay of the episode does not begin with. The first episode runs while torch warms up and is left out; so
    is one episode in three, for a machine loaded enough to keep the tick past the simulator's idle timeout
    (the designed fallback: the episode starts a period late; a CI run on a fresh 2-core machine had 2 of 7).
    The flaws this check found (the tick of the reset instant running before START reached it) made most
    episodes late."""
    starts = {e.episode: seconds(e.header.stamp) for e in obs.events if e.event == EpisodeEvent.START}
    firsts = {t.episode: seconds(t.header.stamp) for t in obs.transitions if t.step == 0}
    checked = sorted(e for e in firsts if e in starts and e > min(starts))
    assert len(checked) >= 3, f"too few episodes to judge their starts: {checked}"
    late = {e: round(firsts[e] - starts[e], 3) for e in checked if abs(firsts[e] - starts[e]) > 1e-6}
    waits = ("start_wait", "hold", "ticks", "inputs", "gripper_goal", "gc")
    pol = {k: v for k, v in obs.diagnostics.get("policy_node", {}).items() if k.startswith(waits)}
    sim = {k: obs.diagnostics.get("sim_node", {}).get(k) for k in ("idle_periods", "dropped_before_reset")}
    assert len(late) <= len(checked) // 3, (f"episodes first commanded after their reset instant (s late): {late} "
                                            f"of {checked}; policy_node {pol}; sim_node {sim}")


def check_every_step_reached_learner(obs: StackObserver, timeout: float = 30.0) -> None:
    """Between episodes, the learner has received exactly the steps the policy executed."""
    def equal() -> bool:
        pol, lrn = obs.diagnostics.get("policy_node", {}), obs.diagnostics.get("learner_node", {})
        return "transitions" in pol and pol.get("transitions") == lrn.get("transitions_received")
    assert obs.spin_until(equal, timeout), (f"policy executed {obs.diagnostics.get('policy_node', {}).get('transitions')} "
                                            f"steps, learner received "
                                            f"{obs.diagnostics.get('learner_node', {}).get('transitions_received')}")


#: log lines that tell how a reflex came about: the reflex, the switches and drops before it, the recovery
REFLEX_CONTEXT = re.compile(r"reflex|off the path|after its stamp|dropped a trajectory|not active|recover|"
                            r"switch_controller|given up|\[(WARN|ERROR)\]")


def check_no_reflex(obs: StackObserver, logs: Path | None = None) -> None:
    """The simulated FR3 (every 1 ms command through libfranka's checks) never stopped with a reflex.
    ``logs``: the run's node logs (``run_dir/logs``), whose lines about the reflex a failure shows."""
    sim = obs.diagnostics.get("sim_node")
    modes_ok = obs.robot_modes == {"move"}
    reflexes_ok = sim is not None and sim.get("reflexes") == "0"
    context = "" if (modes_ok and reflexes_ok) or logs is None else "\n" + _reflex_context(logs)
    assert modes_ok, f"robot modes seen: {obs.robot_modes}{context}"
    assert reflexes_ok, f"sim_node diagnostics: {sim}{context}"


def _reflex_context(logs: Path) -> str:
    """The lines of the node logs in ``logs`` that tell how a reflex came about (:data:`REFLEX_CONTEXT`)."""
    return "\n".join(f"{node}: {line}" for node in ("sim_node", "policy_node", "reward_node")
                     if (logs / f"{node}.log").exists()
                     for line in (logs / f"{node}.log").read_text(errors="replace").splitlines()
                     if REFLEX_CONTEXT.search(line))


def sim_node_totals(log: Path) -> dict[str, int]:
    """sim_node's counters at its exit, from the "stopped:" line of its log (``run_dir/logs/sim_node.log``).

    The diagnostics an observer holds are the last ones it received, up to a publish period old: a goal or a
    reflex of the last episode may not be in them yet."""
    found = re.search(r"\[sim_node\]: stopped: (\{[^}]*\})", log.read_text())
    assert found, f"no 'stopped:' line in {log}: sim_node did not exit cleanly"
    return ast.literal_eval(found.group(1))


#: [m] gripper commands at least this wide leave the hand open (franka_gripper goals start below the hysteresis)
OPEN_WIDTH = 0.078
#: [rad] the stack's and the replay's joint positions agree to 1e-9 while the hand is open, drift to ~5e-5 where
#: the headless hand follows a width between OPEN_WIDTH and open; a joint state 20 ms old is off by ~1e-2
TWIN_Q_TOLERANCE = 1e-3
#: [grey levels, mean absolute] the same frame: <= 0.05; the frame of the previous control period: 0.4 to 10
TWIN_IMAGE_TOLERANCE = 0.2


def check_headless_twin(obs: StackObserver, episode: int, replan_margin: int, seed: int, cameras=("scene",),
                        image_size: int = 96) -> int:
    """The stack's observations are the headless environment's: each decision's T_o history (joint positions and
    camera frames) equals, exactly, what :class:`~mechanic_rl_ros.sim.FR3Env` observes at the same steps when
    the commands the stack executed in ``episode`` are replayed from its reset seed. Checked up to the first
    gripper command below the open width (from there on the headless hand follows every width, the stack's
    only a franka_gripper goal's). A frame one control period old beside a fresh joint state (the lock-step
    clock arrives before that instant's data) or a joint state of 20 ms earlier fails here. Returns the
    decisions checked."""
    from mechanic_rl_ros.sim import make_env
    from mechanic_rl_ros.wire.transition import decision_from_transition

    steps = sorted((t for t in obs.transitions if t.episode == episode), key=lambda t: t.step)
    assert [t.step for t in steps] == list(range(len(steps))) and steps, f"episode {episode}: steps {len(steps)}"
    env = make_env(task="lift", render=True, cameras=cameras, image_size=image_size, seed=seed)
    try:
        first, _ = env.reset(seed=seed)
        seen = [first]
        for t in steps:
            seen.append(env.step(np.asarray(t.action))[0])
    finally:
        env.close()
    open_until = next((t.step for t in steps if t.action[7] < OPEN_WIDTH), len(steps))
    pol, sim = obs.diagnostics.get("policy_node", {}), obs.diagnostics.get("sim_node", {})
    timing = (f"policy_node inputs_behind {pol.get('inputs_behind')}, ticks_late {pol.get('ticks_late')}; sim_node "
              f"idle_periods {sim.get('idle_periods')}, late_trajectories {sim.get('late_trajectories')}")
    checked = 0
    for t in steps:
        newest = max(0, t.step - replan_margin) if t.chunk > 0 else 0  # the step the chunk was planned at
        if t.chunk_step != 0 or newest >= open_until:
            continue
        d = decision_from_transition(t)
        horizon = d.obs["qpos"].shape[0]
        for h in range(horizon):
            j = max(0, newest - (horizon - 1 - h))
            np.testing.assert_allclose(d.obs["qpos"][h], seen[j]["qpos"], atol=TWIN_Q_TOLERANCE, err_msg=(
                f"episode {episode}, decision at step {t.step}, history {h}: joint positions are not those of "
                f"step {j} ({timing})"))
            for cam in cameras:
                def diff(k: int) -> float:
                    return float(np.abs(d.obs["images"][cam][h].astype(int) - seen[k]["images"][cam].astype(int)).mean())
                if diff(j) >= TWIN_IMAGE_TOLERANCE:
                    near = {k: round(diff(k), 2) for k in range(max(0, j - 2), min(len(seen), j + 3))}
                    raise AssertionError(
                        f"episode {episode}, decision at step {t.step}, history {h}: the {cam} frame differs from "
                        f"that of step {j} by {diff(j):.2f} grey levels on average (from the steps around it: "
                        f"{near}; {timing})")
        checked += 1
    return checked
