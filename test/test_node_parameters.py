"""Every node parameter says what it is where `ros2 param describe` reads it.

The stack's five node types run as their own processes, started from the
stack description with its parameter files (the same command lines as the
runner and the launch file); the test asks their parameter services -- what
`ros2 param list / describe / set` use -- for every declared parameter.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, ListParameters, SetParameters

from mechanic_rl_ros.stack import description
from mechanic_rl_ros.stack.runner import node_command
from rosenv import REPO, fresh_domain_id, start_python
from stack_fixtures import Probe, make_checkpoint

#: parameters rclpy declares on every node by itself
RCLPY_OWN = {"use_sim_time", "start_type_description_service"}
NUMERIC = (ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE)


def _call(probe: Probe, client, request, tries: int = 4, timeout: float = 20.0):
    """One answer of ``client``'s service; the request is sent again after ``timeout`` s without one.

    A request sent just after discovery can be lost while the server has not
    yet matched the client's response reader (ros2/rmw_fastrtps#238 narrows,
    does not close, that window); ``ros2 param`` users simply ask again.
    """
    for _ in range(tries):
        future = client.call_async(request)
        if probe.spin_until(future.done, timeout):
            return future.result()
        client.remove_pending_request(future)
    raise AssertionError(f"no answer from {client.srv_name} to {tries} requests, {timeout:.0f} s apart")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_parameters")
    make_checkpoint(tmp / "ckpt")
    specs = description.nodes({"checkpoint": str(tmp / "ckpt"), "run_dir": str(tmp / "run")}, REPO / "config")
    domain = fresh_domain_id()
    procs = {s.name: start_python(node_command(s)[1:], domain, tmp / f"{s.name}.log") for s in specs}
    probe = Probe(domain, "parameter_probe")

    def logs() -> str:
        return "\n".join(f"--- {n}\n{(tmp / f'{n}.log').read_text()[-2000:]}" for n in procs)

    yield {"specs": {s.name: s for s in specs}, "probe": probe, "procs": procs, "logs": logs}
    probe.close()
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.wait(60)


NODES = ("sim_node", "camera_node", "policy_node", "reward_node", "learner_node")


@pytest.mark.parametrize("node", NODES)
def test_every_parameter_is_described_ranged_and_read_only(stack, node):
    probe = stack["probe"]
    lister = probe.node.create_client(ListParameters, f"/{node}/list_parameters")
    describer = probe.node.create_client(DescribeParameters, f"/{node}/describe_parameters")
    setter = probe.node.create_client(SetParameters, f"/{node}/set_parameters")
    assert probe.spin_until(lambda: describer.service_is_ready() and lister.service_is_ready(), 180), stack["logs"]()
    names = list(_call(probe, lister, ListParameters.Request()).result.names)
    ours = sorted(set(names) - RCLPY_OWN)
    assert ours, names
    descriptors = _call(probe, describer, DescribeParameters.Request(names=ours)).descriptors
    problems = []
    for d in descriptors:
        if not d.description.strip():
            problems.append(f"{d.name}: no description")
        if d.type in NUMERIC and not (d.integer_range or d.floating_point_range):
            problems.append(f"{d.name}: numeric without a range")
        if not d.read_only:  # every node reads its parameters once, at start-up
            problems.append(f"{d.name}: not read_only, yet changing it would do nothing")
    assert not problems, "\n".join(problems)

    # every key of the node's parameter file is a parameter the node declares (rclpy ignores unknown ones)
    params_file = stack["specs"][node].params_file
    keys = set(yaml.safe_load(params_file.read_text())[node]["ros__parameters"])
    assert keys <= set(ours), f"{params_file.name} sets undeclared parameters {sorted(keys - set(ours))}"

    # `ros2 param set` of a start-up parameter is refused, not silently ignored
    first = next(d for d in descriptors if d.type == ParameterType.PARAMETER_DOUBLE)
    request = SetParameters.Request(parameters=[ParameterMsg(name=first.name, value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=1.0))])
    result = _call(probe, setter, request).results[0]
    assert not result.successful and "read-only" in result.reason, result


def _refused_start(tmp_path, node: str, *params: str) -> str:
    """Start ``node`` with its YAML and ``params``; it must exit non-zero. Its log."""
    proc = start_python(["-m", f"mechanic_rl_ros.nodes.{node}", "--ros-args", "--params-file",
                         f"config/{node.removesuffix('_node')}.yaml", *[a for p in params for a in ("-p", p)]],
                        fresh_domain_id(), tmp_path / f"{node}.log")
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    text = (tmp_path / f"{node}.log").read_text()
    assert code != 0, text
    return text


def test_a_value_outside_its_range_stops_the_node_with_the_parameter_named(tmp_path):
    text = _refused_start(tmp_path, "reward_node", "max_steps:=0")
    assert "parameter max_steps: got 0; expected an integer in [1, inf]" in text, text


def test_a_dppo_batch_below_the_measured_signal_to_noise_threshold_is_refused(tmp_path):
    """The stack's DPPO may not update on fewer decisions than studies/pg_snr.py says it needs."""
    make_checkpoint(tmp_path / "ckpt")
    text = _refused_start(tmp_path, "learner_node", f"checkpoint:={tmp_path / 'ckpt'}",
                          f"run_dir:={tmp_path / 'run'}", "algorithm:=dppo", "batch_size:=16")
    assert "parameter batch_size: got 16; expected at least min_batch_size = 2600" in text, text


def test_a_malformed_select_config_is_refused_naming_the_file_and_field(tmp_path):
    """policy_node and learner_node read the same selection settings; a bad file stops them at start-up."""
    make_checkpoint(tmp_path / "ckpt")
    bad = tmp_path / "select.yaml"
    bad.write_text("num_candidates: -2\n")
    text = _refused_start(tmp_path, "learner_node", f"checkpoint:={tmp_path / 'ckpt'}",
                          f"run_dir:={tmp_path / 'run'}", f"select_config:={bad}")
    assert f"select config {bad}: num_candidates = -2; expected an integer >= 1" in text, text
