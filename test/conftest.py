import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

# test_finetune_launch.py is a launch_testing file for `colcon test` on a ROS
# install; without launch_testing, test_finetune_stack.py makes the same checks.
collect_ignore = [] if importlib.util.find_spec("launch_testing") else ["test_finetune_launch.py"]
