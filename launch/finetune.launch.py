"""ros2 launch mechanic_rl_ros finetune.launch.py [name:=value ...]

Starts the fine-tuning node stack. Which nodes run, and with which parameter
files and overrides, comes from mechanic_rl_ros.stack.description -- the same
description the venv runner (`mechanic-rl finetune`) starts, so the two never
drift apart. `ros2 launch mechanic_rl_ros finetune.launch.py --show-args`
lists the arguments.
"""
import re

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mechanic_rl_ros import resources
from mechanic_rl_ros.stack import description

PACKAGE = "mechanic_rl_ros"
#: seconds a node gets after SIGINT before launch escalates to SIGTERM
SHUTDOWN_SECONDS = 60


class NodeFailed(RuntimeError):
    """A node of the stack exited with a non-zero code."""


#: terminal colour codes (rcutils colours its log lines on launch's emulated tty)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _exit_handlers(node, name):
    """Event handlers that make a node's exit stop the stack, and a non-zero exit fail the launch.

    A node that exits on its own takes the stack down (every node is needed). ``Shutdown`` alone would let
    ``ros2 launch`` exit 0 after a node died, so a non-zero exit code raises instead: LaunchService logs
    it as one ERROR line ("Caught exception in launch ...: node <name> exited with code <n>: <its last
    stderr line>"), shuts down, and ``LaunchService.run`` -- hence ``ros2 launch`` -- returns 1. A node
    stopped by the launch's own SIGINT exits 0 and fails nothing.
    """
    last = {}

    def remember(event):
        lines = [ln.strip() for ln in _ANSI.sub("", event.text.decode(errors="replace")).splitlines() if ln.strip()]
        if lines:
            last["stderr"] = lines[-1]

    def on_exit(event, context):
        if event.returncode != 0:
            raise NodeFailed(f"node {name} exited with code {event.returncode}: "
                             f"{last.get('stderr', 'nothing on stderr')}; stopping the stack")
        # after Ctrl-C every node exits 0: the launch is already stopping, nothing to add
        return None if context.is_shutdown else [Shutdown(reason=f"{name} exited")]

    return [RegisterEventHandler(OnProcessIO(target_action=node, on_stderr=remember)),
            RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]


def _stack(context):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in description.ARGUMENTS}
    config_dir = resources.config_dir()
    # a relative run_dir becomes absolute here, once (description.resolve), and the log says where it went
    run_dir = description.resolve(values)["run_dir"]
    actions = [LogInfo(msg=description.run_dir_message(values["run_dir"], run_dir))]
    for spec in description.nodes(values, config_dir):
        node = Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            output="screen",
            emulate_tty=True,
            parameters=[str(spec.params_file), spec.overrides],
            additional_env=spec.env,
            # the learner finishes its update and writes a checkpoint on SIGINT
            sigterm_timeout=str(SHUTDOWN_SECONDS),
        )
        actions += [*_exit_handlers(node, spec.name), node]
    if values["rviz"] == "true":
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
                            arguments=["-d", str(config_dir / "finetune.rviz")],
                            parameters=[{"use_sim_time": values["sim"] == "true"}]))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                               **({"choices": list(a.choices)} if a.choices else {}))
         for a in description.ARGUMENTS]
        + [OpaqueFunction(function=_stack)]
    )
