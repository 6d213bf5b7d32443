"""The stack with the distillation learner (algorithm:=distill), five processes on lock-step sim time, as
`mechanic-rl finetune` starts them: learner_node reads the demonstrations and makes its offline stage on them
while policy_node and reward_node hold the first episode for it; it publishes the trained layers of the policy;
policy_node swaps them in between chunks and refuses distilled layers of another policy, keeping the last good
ones; at Ctrl-C the learner leaves an ordinary policy checkpoint in <run_dir>/learner/policy."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from rosenv import REPO, fresh_domain_id, ros_env
from stack_checks import StackObserver
from stack_fixtures import LATCHED, make_checkpoint

from mechanic_rl_ros.msg import PolicyWeights
from mechanic_rl_ros.wire.weights import weights_message


@pytest.mark.slow
def test_distilled_layers_reach_the_policy_and_the_run_leaves_a_checkpoint(tmp_path):
    from mechanic_rl_ros.jobs.collect import CollectConfig, collect
    from mechanic_rl_ros.policy import DiffusionPolicy

    make_checkpoint(tmp_path / "ckpt")
    collect(CollectConfig(episodes=2, out=str(tmp_path / "demos"), noise=0.0, seed=5000, progress=False))
    (tmp_path / "distill.yaml").write_text("batch_size: 8\noffline_steps: 6\n")
    domain = fresh_domain_id()
    log = open(tmp_path / "runner.log", "wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "mechanic_rl_ros.cli", "finetune", f"checkpoint:={tmp_path / 'ckpt'}",
         f"run_dir:={tmp_path / 'run'}", "algorithm:=distill", f"demos:={tmp_path / 'demos'}",
         f"distill_config:={tmp_path / 'distill.yaml'}",
         "--set", "reward_node.max_steps=24", "--set", "learner_node.weights_publish_every=2"],
        cwd=REPO, env=ros_env(domain), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    obs = StackObserver(domain)
    text = (tmp_path / "runner.log").read_text
    try:
        # the offline stage publishes versions 1-3; policy_node holds the first episode until it has the last
        assert obs.spin_until(lambda: len(obs.transitions) > 0, 600), text()[-5000:]
        assert min(t.policy_version for t in obs.transitions) == 3, sorted({t.policy_version for t in obs.transitions})
        assert obs.spin_until(lambda: len(obs.weights) > 0, 60), "no PolicyWeights seen by the observer"
        published = max(w.version for w in obs.weights)
        good = obs.weights[-1]
        assert published == 3 and good.architecture_id.startswith("distill-")
        # layers of another policy (another architecture id), then a corrupt message: refused, version kept
        ckpt = DiffusionPolicy.from_checkpoint(tmp_path / "ckpt")
        other = weights_message({"unet.final.1.weight": ckpt.net.state_dict()["unet.final.1.weight"]}, version=7,
                                architecture_id="distill-0123456789abcdef", finetune_steps=0)
        corrupt = weights_message({}, version=8, architecture_id=good.architecture_id, finetune_steps=0)
        corrupt.sha256 = "0" * 64
        pub = obs.node.create_publisher(PolicyWeights, "/policy/weights", LATCHED)
        logs = tmp_path / "run" / "logs" / "policy_node.log"
        for i, msg in enumerate((other, corrupt)):
            pub.publish(msg)
            assert obs.spin_until(lambda: logs.read_text().count("refused, keeping version 3") >= i + 1, 60), \
                logs.read_text()[-3000:]
        n = len(obs.transitions)
        assert obs.spin_until(lambda: len(obs.transitions) > n + 10, 120), text()[-3000:]
        assert {t.policy_version for t in obs.transitions[n:]} == {3}
        # its /diagnostics come once a wall second from the learner's start: the episode can start before one is seen
        assert obs.spin_until(lambda: int(obs.diagnostics.get("learner_node", {}).get("num_updates", 0)) >= 6, 30), \
            obs.diagnostics
        diag = obs.diagnostics["learner_node"]
        assert int(diag.get("num_updates", 0)) >= 6 and int(diag.get("demo_windows", 0)) > 0, diag
    finally:
        obs.close()
        runner.send_signal(signal.SIGINT)
        code = runner.wait(120)
    assert code == 0, text()[-3000:]
    saved = tmp_path / "run" / "learner"
    assert json.loads((saved / "node_state.json").read_text())["algorithm"] == "distill"
    policy = DiffusionPolicy.from_checkpoint(saved / "policy", expected_arch_id=ckpt.arch_id)
    start = ckpt.net.state_dict()
    changed = [k for k, v in policy.net.state_dict().items() if not (v == start[k]).all()]
    assert changed and all(k.startswith(("unet.up", "unet.final")) for k in changed), changed
