"""CMakeLists.txt's add_launch_test TIMEOUT leaves test_finetune_launch.py the time it may take: its waits
for the running stack (WAIT_S), its final check, the start-up and the stack's shutdown. launch_testing is
not installed here (conftest.py leaves that file out), so its numbers are read from the sources, and the
file is at least compiled."""
from __future__ import annotations

import ast
import inspect
import re

import stack_checks
from rosenv import REPO

#: [s] making the test checkpoint and starting five nodes, generously (about 30 s on the 2-core CI machine)
START_UP_S = 120
#: [s] launch's SIGKILL after its SIGTERM (launch_ros Node's default sigkill_timeout)
SIGKILL_AFTER_S = 5


def _constant(path, name: str):
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} defines no {name}")


def test_the_launch_test_fits_its_ctest_timeout():
    launch_test = REPO / "test" / "test_finetune_launch.py"
    compile(launch_test.read_text(), str(launch_test), "exec")
    found = re.search(r"add_launch_test\(test/test_finetune_launch\.py TIMEOUT (\d+)\)",
                      (REPO / "CMakeLists.txt").read_text())
    assert found, "CMakeLists.txt must register test/test_finetune_launch.py with a TIMEOUT"
    timeout = int(found.group(1))
    waits = _constant(launch_test, "WAIT_S")
    final_check = inspect.signature(stack_checks.check_every_step_reached_learner).parameters["timeout"].default
    shutdown = _constant(REPO / "launch" / "finetune.launch.py", "SHUTDOWN_SECONDS") + SIGKILL_AFTER_S
    needed = START_UP_S + waits + final_check + shutdown
    assert timeout >= needed, (f"TIMEOUT {timeout} s < start-up {START_UP_S} + waits {waits} + final check "
                               f"{final_check} + shutdown {shutdown} = {needed} s")
