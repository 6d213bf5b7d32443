import importlib.util
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

# test_finetune_launch.py is a launch_testing file for `colcon test` on a ROS
# install; without launch_testing, test_finetune_stack.py makes the same checks.
collect_ignore = [] if importlib.util.find_spec("launch_testing") else ["test_finetune_launch.py"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny state-only policy checkpoint with random weights (for the headless trainers' tests)."""
    import torch

    from mechanic_rl_ros.policy import DiffusionPolicy
    from fixtures_policy import tiny_config

    d = tmp_path_factory.mktemp("tiny_state_policy")
    torch.manual_seed(0)
    DiffusionPolicy(tiny_config(state_only=True)).save(d)
    return d


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory):
    """A ``colcon build`` of a copy of the package; its ``install/``. Session-wide and defined here, so that
    test_colcon_build.py and test_installed_stack.py share one build (a fixture imported into a module is
    that module's own)."""
    from test_colcon_build import build_install

    return build_install(tmp_path_factory.mktemp("colcon_ws"))
