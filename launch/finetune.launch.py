"""ros2 launch mechanic_rl_ros finetune.launch.py [name:=value ...]

Starts the fine-tuning node stack. Which nodes run, and with which parameter
files and overrides, comes from mechanic_rl_ros.stack.description -- the same
description the venv runner (`mechanic-rl finetune`) starts, so the two never
drift apart. `ros2 launch mechanic_rl_ros finetune.launch.py --show-args`
lists the arguments.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mechanic_rl_ros import resources
from mechanic_rl_ros.stack import description

PACKAGE = "mechanic_rl_ros"
#: seconds a node gets after SIGINT before launch escalates to SIGTERM
SHUTDOWN_SECONDS = 60


def _stack(context):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in description.ARGUMENTS}
    config_dir = resources.config_dir()
    # a relative run_dir becomes absolute here, once (description.resolve), and the log says where it went
    run_dir = description.resolve(values)["run_dir"]
    actions = [LogInfo(msg=description.run_dir_message(values["run_dir"], run_dir))]
    actions += [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            output="screen",
            emulate_tty=True,
            parameters=[str(spec.params_file), spec.overrides],
            additional_env=spec.env,
            on_exit=Shutdown(reason=f"{spec.name} exited"),
            # the learner finishes its update and writes a checkpoint on SIGINT
            sigterm_timeout=str(SHUTDOWN_SECONDS),
        )
        for spec in description.nodes(values, config_dir)
    ]
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
