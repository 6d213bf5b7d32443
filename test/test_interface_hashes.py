"""The stand-in interface packages (interfaces/) have the upstream types' RIHS01 hashes.

A Jazzy node only talks to a peer whose type hash matches. The expected values
below were computed by rosidl from the upstream definitions, comments included
(franka_ros2 v3.4.0 franka_msgs, control_msgs 5.8.0, ros2_control 4.46.0
controller_manager_msgs, all jazzy), once, when the stand-ins were written;
the test reads the hashes rosidl computed for the stand-ins installed in the
venv. A missing field (the gripper actions' feedback ``current_width`` was one)
changes the hash.
"""
import json
import sys
from pathlib import Path

import pytest

UPSTREAM = {
    "franka_msgs/action/Move": "RIHS01_ff1f93537cae0ce92792433e368199606771ad62bb819d78078bfe37144d3ef1",
    "franka_msgs/action/Grasp": "RIHS01_8e8a4bb9d96564ae56fb2d47e932c65656316f5c10365958a26df3517a06bb92",
    "franka_msgs/action/Homing": "RIHS01_2156a4bd902561e59e6081ba94428daf9a453f960596f8b7ca12e8281e0caeeb",
    "franka_msgs/action/ErrorRecovery": "RIHS01_6c5dbf0517672f7127a92796e6a162d096e286c26f88c96177cb4c5448dfc5f5",
    "franka_msgs/msg/GraspEpsilon": "RIHS01_387fda91ae7324c144958fa617e7d5dc21f99d6b054b141b073ead3d082f46d3",
    "franka_msgs/msg/FrankaRobotState": "RIHS01_fd225b337bab54d06047858c866442b98e3a882a4717cefc6ddd783fcbf17332",
    "franka_msgs/msg/Errors": "RIHS01_eaf7a9752f64efac239306101020545cebebff8b5130875d95bf0ed4d8bb774d",
    "control_msgs/action/GripperCommand": "RIHS01_e17c0e644eccf14bea84a0a93e0977182872c2eb7873ca6694900059b46dbc84",
    "control_msgs/msg/GripperCommand": "RIHS01_57eb8f326c9889ca8bb34ead82cc94cc09bf6bc5c3b6c09546dca3a00b589890",
    "controller_manager_msgs/srv/SetHardwareComponentState":
        "RIHS01_940b15846ed3e1fb561ab45edf77a992b811fd59c574f45d5205a84a0deb2f65",
    "controller_manager_msgs/srv/SwitchController":
        "RIHS01_d4ad10aa5da7808bc522d55d4123d8ef79de73d049d165639d7663ac37cc9895",
}


@pytest.mark.parametrize("type_name", sorted(UPSTREAM))
def test_stand_in_type_hash_matches_upstream(type_name):
    pkg, kind, name = type_name.split("/")
    path = Path(sys.prefix) / "share" / pkg / kind / f"{name}.json"
    assert path.is_file(), f"{path}: the stand-in {type_name} is not installed (make setup builds interfaces/)"
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(path.read_text())["type_hashes"]}
    assert hashes[type_name] == UPSTREAM[type_name]
