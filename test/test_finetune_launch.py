"""launch_testing test of finetune.launch.py, for `colcon test` on a ROS 2
Jazzy install (registered in CMakeLists.txt with add_launch_test). Where
launch_testing is not installed (the venv, CI), test/conftest.py leaves this
file out and test_finetune_stack.py makes the same checks (stack_checks.py)
through the venv runner, which starts the same nodes from the same
description."""
import os
import shutil
import sys
import tempfile
import time
import unittest
from pathlib import Path

import launch
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack_checks as checks  # noqa: E402
from stack_checks import StackObserver  # noqa: E402
from stack_fixtures import make_checkpoint  # noqa: E402

EPISODES = 12
#: [s] the test's waits for the running stack, all together. CMakeLists.txt's add_launch_test TIMEOUT must
#: also cover start-up (checkpoint, five nodes), the final checks and the shutdown (finetune.launch.py's
#: SHUTDOWN_SECONDS): test_launch_test_budget.py checks the two stay consistent.
WAIT_S = 900
#: temporary directories of this run, removed once the stack has exited
_TMP_DIRS: list[Path] = []


@pytest.mark.launch_test
def generate_test_description():
    tmp = Path(tempfile.mkdtemp(prefix="finetune_launch_test_"))
    _TMP_DIRS.append(tmp)
    make_checkpoint(tmp / "ckpt")
    launch_file = os.path.join(get_package_share_directory("mechanic_rl_ros"), "launch", "finetune.launch.py")
    stack = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={"checkpoint": str(tmp / "ckpt"), "run_dir": str(tmp / "run"),
                          "episodes": str(EPISODES)}.items())
    return launch.LaunchDescription([stack, launch_testing.actions.ReadyToTest()]), {"tmp": tmp}


class TestFinetuneStack(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.obs = StackObserver(int(os.environ.get("ROS_DOMAIN_ID", "0")))

    @classmethod
    def tearDownClass(cls):
        cls.obs.close()

    def test_stack_learns_on_the_simulated_fr3(self):
        obs = self.obs
        deadline = time.monotonic() + WAIT_S

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        checks.wait_for_learning(obs, versions=3, timeout=remaining())
        self.assertTrue(obs.spin_until(lambda: obs.ended_episodes() >= EPISODES, remaining()))
        checks.check_every_step_reached_learner(obs)
        checks.check_command_rate(obs, rate=10.0)
        checks.check_versions_adopted(obs, versions=3)
        checks.check_resets(obs)
        checks.check_first_action_at_reset(obs)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    @classmethod
    def tearDownClass(cls):
        # every node has exited (the learner wrote its checkpoint): the checkpoint and run directory can go
        for tmp in _TMP_DIRS:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_every_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
