"""Which nodes the fine-tuning stack runs, with which parameters.

Pure Python (no launch, no rclpy): ``launch/finetune.launch.py`` turns the
:class:`NodeSpec` list into launch_ros ``Node`` actions, and
:mod:`mechanic_rl_ros.stack.runner` into child processes, so both start the
same nodes with the same parameter files and overrides.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mechanic_rl_ros.resources import package_file

BOOL = ("true", "false")


@dataclass(frozen=True)
class Argument:
    """A launch argument (``name:=value`` on both ros2 launch and the runner)."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


ARGUMENTS: tuple[Argument, ...] = (
    Argument("sim", "true", "run the simulated FR3 (sim_node) in lock-step and put every node on sim time", BOOL),
    Argument("task", "lift", "simulated task", ("lift", "push")),
    Argument("checkpoint", "", "pretrained policy checkpoint directory ('' = policy_node's configured default)"),
    Argument("camera_topic", "/camera/scene/image_raw", "raw camera image topic (sensor_msgs/Image) the camera node reads"),
    Argument("command_topic", "/fr3_position_trajectory_controller/joint_trajectory", "where arm commands go (the "
             "JointTrajectoryController on the FR3's position interface, config/franka_controllers.yaml)"),
    Argument("command_type", "trajectory", "command message: trajectory = JointTrajectory (JTC; the setup README "
             "gives), array = Float64MultiArray (forward command controller: the FR3 reflexes on its steps)",
             ("array", "trajectory")),
    Argument("algorithm", "select", "learner: select = value-guided selection among the frozen policy's proposals "
             "(off-policy critic, improves within robot minutes; config/select.yaml), dppo = DPPO on the "
             "denoiser (thousands of decisions per update: simulator scale; config/rl.yaml), distill = the "
             "policy's own layers trained on its successful chunks and the demonstrations (config/distill.yaml)",
             ("select", "dppo", "distill")),
    Argument("demos", "", "algorithm distill: directory of demonstration bags the learner mixes into every batch "
             "(mechanic-rl collect --out, or ros2 bag record of the stack's topics); '' = none"),
    Argument("distill_config", "", "algorithm distill: YAML of the distillation settings, read by learner_node and "
             "policy_node alike (which layers train and cross the wire; config/distill_encoder.yaml trains the camera "
             "encoder too, for a changed scene), and/or key=value overrides separated by spaces, e.g. "
             "distill_config:='distill_augmented.yaml augment_warp=0.5'; '' = config/distill.yaml"),
    Argument("interventions", "none", "sim = the simulated operator (operator_node, config/operator.yaml) takes over "
             "through the teleop topics when the policy is about to fail, as a person would (sim:=true only); none = "
             "no simulated operator. A person with a SpaceMouse or gamepad can take over in any case (README "
             "'Taking over')", ("none", "sim")),
    Argument("world", "default", "scene variation of the simulated FR3 (sim:=true only; docs/world.md): default = "
             "the training scene; a preset of config/worlds/ (camera_shift_2cm, dim_light, heavy_cube, distractors, "
             "...), the path of a world YAML file, and/or field=value overrides separated by spaces, e.g. "
             "world:='dim_light cube_mass=0.3'"),
    Argument("seed", "0", "learner seed (critic initialisation, batches) and policy_node's sampling seed"),
    Argument("optimizer", "mechanic", "learner optimiser: mechanic (no learning rate) or adam (config/learner.yaml lr)",
             ("mechanic", "adam")),
    Argument("run_dir", "runs/finetune", "where the learner writes checkpoints and logs, and resumes from; a "
             "relative path is taken from the current directory"),
    Argument("episodes", "0", "stop starting new episodes once this many have ended; one aborted by a robot "
             "fault does not count (0 = run until stopped)"),
    Argument("learner_pace", "0", "[gradient steps per robot minute] hold each episode's start until the learner "
             "has made this many gradient steps per robot minute (while it owes some): a simulated run then learns "
             "as much per robot minute on any machine; 0 = never hold (the learner makes what the machine allows)"),
    Argument("rviz", "false", "start RViz with config/finetune.rviz", BOOL),
    Argument("realtime_priority", "0", "on a robot (sim:=false): SCHED_RR priority of policy_node and reward_node "
             "(camera_node 5 lower), above every normal process; 0 = the normal scheduler (README 'On a real FR3')"),
    Argument("dds_profile", "large_frames", "Fast DDS profile of the nodes that move camera frames (sim_node, "
             "camera_node): large_frames = config/fastdds_large_frames.xml (a shared-memory segment that holds "
             "large frames, README 'Cameras'), default = Fast DDS's own settings, or the path of an XML profile"),
)

#: the Fast DDS profile shipped in config/ for camera frames on one host
LARGE_FRAMES_PROFILE = "fastdds_large_frames.xml"


@dataclass
class NodeSpec:
    """One node of the stack: ``executable`` is the module name under
    ``mechanic_rl_ros.nodes`` and the installed executable's name."""

    name: str
    executable: str
    params_file: Path
    overrides: dict[str, object] = field(default_factory=dict)
    #: environment variables of this node's process, on top of the caller's
    env: dict[str, str] = field(default_factory=dict)


def resolve(values: Mapping[str, str]) -> dict[str, str]:
    """Fill defaults and check ``values`` against :data:`ARGUMENTS`; ``run_dir`` becomes absolute.

    A relative ``run_dir`` (the default is one) is taken from the current
    directory here, once, so that every node and the runner use the same
    directory whatever their own working directory, and the start-up log can
    say where the run goes (:func:`run_dir_message`). Raises ``ValueError``
    naming the argument and what was expected.
    """
    known = {a.name: a for a in ARGUMENTS}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; expected some of {sorted(known)}")
    out = {a.name: str(values.get(a.name, a.default)) for a in ARGUMENTS}
    for name in ("episodes", "seed", "realtime_priority"):
        if not out[name].isdigit():
            raise ValueError(f"launch argument {name}: got {out[name]!r}; expected a whole number >= 0")
    from mechanic_rl_ros.control.pace import PaceConfig

    try:
        PaceConfig(rate=float(out["learner_pace"]))  # reward_node's own check, before any node starts
    except ValueError:
        raise ValueError(f"launch argument learner_pace: got {out['learner_pace']!r}; expected gradient steps per "
                         f"robot minute >= 0 (0 = never hold)") from None
    if int(out["realtime_priority"]) > 98:
        raise ValueError(f"launch argument realtime_priority: got {out['realtime_priority']}; expected 0-98")
    for name, value in out.items():
        choices = known[name].choices
        if choices and value not in choices:
            raise ValueError(f"launch argument {name}: got {value!r}; expected one of {list(choices)}")
    out["run_dir"] = os.path.abspath(os.path.expanduser(out["run_dir"]))
    return out


def run_dir_message(given: str | None, run_dir: str) -> str:
    """The start-up line of the runner and the launch file: where the run goes.

    ``given`` is the ``run_dir`` argument as the user gave it (``None``: the
    default), ``run_dir`` the absolute path :func:`resolve` made of it.
    """
    given = next(a.default for a in ARGUMENTS if a.name == "run_dir") if given is None else given
    if given == run_dir:
        return f"run_dir: {run_dir}"
    return f"run_dir: {run_dir} ({given!r} taken from the current directory {os.getcwd()})"


def default_checkpoint(task: str) -> Path:
    """The pretrained checkpoint shipped for ``task``: ``checkpoints/<task>_pretrained`` of the package's
    share directory (source checkout, colcon or pip install alike: :mod:`mechanic_rl_ros.resources`), whatever
    parameter directory the stack reads."""
    return package_file("checkpoints", f"{task}_pretrained")


def dds_environment(dds_profile: str, config_dir: Path) -> dict[str, str]:
    """The environment that selects the ``dds_profile`` launch argument's Fast DDS profile.

    Raises ``ValueError`` naming the argument when a given path is not a file.
    """
    if dds_profile == "default":
        return {}
    path = config_dir / LARGE_FRAMES_PROFILE if dds_profile == "large_frames" else Path(dds_profile).expanduser()
    if not path.is_file():
        raise ValueError(f"launch argument dds_profile: {str(path)!r} is not a file; expected large_frames, "
                         f"default or the path of a Fast DDS XML profile")
    return {"FASTRTPS_DEFAULT_PROFILES_FILE": str(path.resolve())}


def nodes(values: Mapping[str, str], config_dir: Path) -> list[NodeSpec]:
    """The stack for resolved argument ``values``; parameter files from ``config_dir``."""
    v = resolve(values)
    frames_env = dds_environment(v["dds_profile"], config_dir)
    sim = v["sim"] == "true"
    common: dict[str, object] = {"use_sim_time": sim}
    checkpoint = v["checkpoint"] or str(default_checkpoint(v["task"]))
    trajectory = v["command_type"] == "trajectory"
    specs: list[NodeSpec] = []
    world = stack_world(v["world"], sim)
    if sim:
        sim_topics = ({"trajectory_topic": v["command_topic"], "arm_controller": "trajectory"} if trajectory
                      else {"command_topic": v["command_topic"], "arm_controller": "forward"})
        specs.append(NodeSpec("sim_node", "sim_node", config_dir / "sim.yaml", {
            **common, "mode": "lockstep", "task": v["task"], **sim_topics}, env=dict(frames_env)))
        if world is not None:
            from mechanic_rl_ros.sim.world import absolute_spec

            specs[-1].overrides["world"] = absolute_spec(v["world"])
    # on sim time nothing waits on the wall clock: real-time threads only on a robot
    rt = 0 if sim else int(v["realtime_priority"])
    specs.append(NodeSpec("camera_node", "camera_node", config_dir / "camera.yaml", {
        **common, "input_topic": v["camera_topic"]}, env=dict(frames_env)))
    distill = stack_distill_config(v["distill_config"], config_dir)
    specs.append(NodeSpec("policy_node", "policy_node", config_dir / "policy_node.yaml", {
        **common, "checkpoint": checkpoint, "command_topic": v["command_topic"], "command_type": v["command_type"],
        "algorithm": v["algorithm"], "seed": int(v["seed"]),
        "start_after_updates": offline_stage(v["algorithm"], v["demos"], distill, config_dir), **distill}))
    if world is not None and world.table_height != 0.0:  # the workspace floor is the table top
        lo = list(_params(config_dir / "policy_node.yaml", "policy_node").get("workspace_min", [0.2, -0.4, 0.0]))
        specs[-1].overrides["workspace_min"] = [float(lo[0]), float(lo[1]), float(lo[2]) + world.table_height]
    reward: dict[str, object] = {**common, "mode": "sim" if sim else "real", "command_topic": v["command_topic"],
                                 "command_type": v["command_type"], "wait_for_policy": True,
                                 "max_episodes": int(v["episodes"]), "learner_pace": float(v["learner_pace"])}
    if sim:  # the simulated task's own time limit
        from mechanic_rl_ros.sim.tasks import TASKS

        reward["max_steps"] = int(TASKS[v["task"]].default_config().max_steps)
    specs.append(NodeSpec("reward_node", "reward_node", config_dir / "reward.yaml", reward))
    specs.append(NodeSpec("learner_node", "learner_node", config_dir / "learner.yaml", {
        **common, "checkpoint": checkpoint, "optimizer": v["optimizer"], "run_dir": v["run_dir"],
        "rl_config": "", "algorithm": v["algorithm"], "seed": int(v["seed"]),
        "demos": os.path.abspath(os.path.expanduser(v["demos"])) if v["demos"] else "", **distill}))
    if v["interventions"] == "sim":
        if not sim:
            raise ValueError("launch argument interventions: sim needs sim:=true (the simulated operator reads the "
                             "simulator's task state); on a robot a person takes over with a device")
        if v["task"] != "lift":
            raise ValueError(f"launch argument interventions: sim corrects the lift task only; got task:={v['task']}")
        specs.append(NodeSpec("operator_node", "operator_node", config_dir / "operator.yaml", {
            **common, **(world.operator_overrides() if world is not None else {})}))
    set_realtime_priorities(specs, rt)
    return specs


def stack_distill_config(spec: str, config_dir: Path) -> dict[str, str]:
    """The ``distill_config`` parameter both learner_node and policy_node get ({} for their configured one),
    checked here so that a bad file or override stops the launch before any node starts (ValueError naming the
    argument and the field). ``spec``: a file and/or ``key=value`` overrides (:func:`load_distill_config`); a
    relative path is taken from the current directory, a bare file name that is not there from ``config_dir``
    (the stack's parameter files), and overrides alone apply to ``config_dir``'s distill.yaml."""
    if not spec.strip():
        return {}
    from mechanic_rl_ros.config_files import spec_items
    from mechanic_rl_ros.rl.distill import distill_settings_file, load_distill_config

    items = spec_items(spec, "launch argument distill_config")
    first = items[0] if "=" not in items[0] else None  # else overrides only
    p = distill_settings_file(first, config_dir) if first else config_dir / "distill.yaml"
    if not p.is_file():
        raise ValueError(f"launch argument distill_config: {first!r} is not a file; expected a YAML of distillation "
                         f"settings (config/distill.yaml's keys) and/or key=value overrides, or '' for "
                         f"config/distill.yaml")
    resolved = " ".join([str(p.resolve()), *items[1 if first else 0:]])
    try:
        load_distill_config(resolved)
    except ValueError as exc:
        raise ValueError(f"launch argument distill_config: {exc}") from None
    return {"distill_config": resolved}


def offline_stage(algorithm: str, demos: str, distill: Mapping[str, str], config_dir: Path) -> int:
    """[gradient steps] the learner makes on the demonstrations before the first episode: ``offline_steps`` of the
    distillation settings (``distill``, :func:`stack_distill_config`'s; else config_dir's distill.yaml) for
    ``algorithm`` distill with ``demos``, 0 otherwise. policy_node holds the first episode for them
    (``start_after_updates``), as the headless twin, ``mechanic-rl train-distill``, makes them before acting."""
    if algorithm != "distill" or not demos.strip():
        return 0
    from mechanic_rl_ros.rl.distill import load_distill_config

    return int(load_distill_config(distill.get("distill_config") or config_dir / "distill.yaml").offline_steps)


def stack_world(spec: str, sim: bool):
    """The :class:`~mechanic_rl_ros.sim.world.World` the ``world`` argument names, checked here so that a bad one
    stops the launch before any node starts; None for the training scene. ValueError naming the argument and the
    field, and for a changed world on a real robot (its world is the real one)."""
    from mechanic_rl_ros.sim.world import DEFAULT_SPEC, load_world

    if spec.strip() in ("", DEFAULT_SPEC):
        return None
    if not sim:
        raise ValueError(f"launch argument world: got {spec!r} with sim:=false; a real robot's world is the real "
                         f"one: expected world:={DEFAULT_SPEC} (scene variations are simulated only)")
    try:
        world = load_world(spec)
    except ValueError as exc:
        raise ValueError(f"launch argument world: {exc}") from None
    return None if world.is_default() else world


def _params(path: Path, node: str) -> dict:
    """``node``'s ``ros__parameters`` in the params file ``path`` ({} when it has none)."""
    from mechanic_rl_ros.config_files import load_yaml

    return dict((load_yaml(path, "parameters file").get(node) or {}).get("ros__parameters") or {})


def set_realtime_priorities(specs: list[NodeSpec], priority: int) -> None:
    """``realtime_priority`` for the control path at ``priority`` (0: none set): policy_node and reward_node at
    it, camera_node 5 lower, a real-time simulator (standing in for the robot's own controller) 5 higher."""
    if priority <= 0:
        return
    prios = {"policy_node": priority, "reward_node": priority, "camera_node": max(1, priority - 5),
             "sim_node": min(98, priority + 5)}
    for spec in specs:
        if spec.name in prios:
            spec.overrides["realtime_priority"] = prios[spec.name]
