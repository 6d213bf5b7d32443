"""A node that dies at start fails `mechanic-rl finetune` visibly: one ERROR line naming the node, its exit
code and its last words, and a non-zero exit (issue 33: the stack went down under a wall of log and a
success code). The runner's own start logs no WARN (issue 28: its launch arguments reached rclpy.init as
deprecated remap rules)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from rosenv import REPO, fresh_domain_id, ros_env
from stack_fixtures import make_checkpoint


@pytest.mark.integration
def test_a_node_dying_at_start_fails_the_runner_with_one_error_line(tmp_path):
    make_checkpoint(tmp_path / "ckpt")
    missing = tmp_path / "no_such_select.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "mechanic_rl_ros.cli", "finetune", f"checkpoint:={tmp_path / 'ckpt'}",
         f"run_dir:={tmp_path / 'run'}", "--set", f"learner_node.select_config={missing}", "--duration", "240"],
        cwd=REPO, env=ros_env(fresh_domain_id()), capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith("[finetune] ERROR")]
    assert len(errors) == 1, out[-4000:]
    assert re.match(r"\[finetune\] ERROR: node learner_node exited with code 1 \(.*no_such_select\.yaml.*\)",
                    errors[0]), errors[0]
    assert str(tmp_path / "run" / "logs" / "learner_node.log") in errors[0]
    # the runner's own lines (node output is prefixed with the node's name): no WARN, e.g. rcl's
    # "Found remap rule 'checkpoint:=...'. This syntax is deprecated."
    own = [line for line in out.splitlines() if not re.match(r"\[\w+_node\] ", line)]
    assert not [line for line in own if "[WARN]" in line or "remap rule" in line], "\n".join(own)
