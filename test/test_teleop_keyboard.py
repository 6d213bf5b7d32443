"""teleop_keyboard_node: the key mapping without ROS, and the node as a process under a pseudo-terminal --
keys typed into the terminal arrive as Twist and Joy on the teleop topics, and SIGINT restores the terminal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import termios

import pytest
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Joy

from mechanic_rl_ros.control.teleop import CLOSE, OPEN, TeleopConfig, TeleopInput
from mechanic_rl_ros.nodes.teleop_keyboard_node import KeyboardTeleop, keys_from_bytes
from mechanic_rl_ros.wire import topics

from rosenv import REPO, fresh_domain_id, ros_env
from stack_fixtures import Probe

SPEED, HOLD = 0.6, 0.3


@pytest.mark.parametrize("key, component, sign", [("w", 0, 1), ("s", 0, -1), ("a", 1, 1), ("d", 1, -1),
                                                  ("r", 2, 1), ("f", 2, -1), ("q", 5, 1), ("e", 5, -1)])
def test_each_motion_key_moves_one_component(key, component, sign):
    t = KeyboardTeleop(SPEED, HOLD)
    assert t.press(key, 10.0)
    linear, angular, held = t.command(10.0)
    expected = [0.0] * 6
    expected[component] = sign * SPEED
    assert linear + angular == expected and held is None


def test_gripper_keys_press_one_button_and_remember_the_state():
    t = KeyboardTeleop(SPEED, HOLD)
    assert t.press(" ", 0.0)
    assert t.command(0.1) == ([0.0] * 3, [0.0] * 3, CLOSE) and t.gripper == CLOSE
    assert t.press("o", 0.2)
    assert t.command(0.3)[2] == OPEN and t.gripper == OPEN  # the later key replaces the button, never both


def test_a_key_stops_key_hold_after_its_last_press_and_auto_repeat_refreshes_it():
    t = KeyboardTeleop(SPEED, HOLD)
    t.press("w", 0.0)
    assert t.command(HOLD - 0.01)[0][0] == SPEED
    assert t.command(HOLD + 0.01)[0][0] == 0.0
    for now in (1.0, 1.2, 1.4):  # auto-repeat while the key is held down
        t.press("w", now)
    assert t.command(1.4 + HOLD - 0.01)[0][0] == SPEED
    assert t.command(1.4 + HOLD + 0.01) == ([0.0] * 3, [0.0] * 3, None)
    t.press(" ", 3.0)
    assert t.command(3.0 + HOLD + 0.01)[2] is None


def test_axes_combine_and_the_opposite_key_replaces():
    t = KeyboardTeleop(SPEED, HOLD)
    t.press("w", 0.0)
    t.press("a", 0.05)
    t.press("e", 0.1)
    assert t.command(0.15) == ([SPEED, SPEED, 0.0], [0.0, 0.0, -SPEED], None)
    t.press("s", 0.2)
    assert t.command(0.25)[0] == [-SPEED, SPEED, 0.0]


def test_hold_key_keeps_the_last_gripper_button_without_motion():
    t = KeyboardTeleop(SPEED, HOLD)
    assert not t.press("h", 0.0), "h before any gripper key: no state to hold"
    assert t.command(0.0) == ([0.0] * 3, [0.0] * 3, None)
    t.press("o", 1.0)
    t.press("w", 1.0)
    assert t.press("h", 2.0)
    assert t.command(2.1) == ([0.0] * 3, [0.0] * 3, OPEN)
    assert t.command(2.0 + HOLD + 0.01)[2] is None


def test_hold_key_keeps_an_intervention_active_in_policy_nodes_teleop_input():
    """The mapping as policy_node reads it: motion takes over, holding with h keeps control, silence hands back."""
    t, op = KeyboardTeleop(SPEED, HOLD), TeleopInput(TeleopConfig())
    t.press("w", 0.0)
    t.press(" ", 0.0)
    now = 0.0
    while now < 3.0:
        if 0.5 <= now < 2.0 and round(now * 20) % 4 == 0:  # h auto-repeated every 0.2 s
            t.press("h", now)
        linear, angular, held = t.command(now)
        op.on_twist(linear, angular, now)
        op.on_joy([int(held == CLOSE), int(held == OPEN)], now)
        if now < 2.0:
            assert op.mode(now) == "active", now
        now = round(now + 0.05, 2)
    assert op.mode(now) == "idle" and op.gripper == CLOSE


def test_unknown_keys_and_escape_sequences_do_nothing():
    t = KeyboardTeleop(SPEED, HOLD)
    assert keys_from_bytes(b"w\x1b[A\x1b[1;5Cd\x1bOB\x1bx ") == ["w", "d", " "]
    for key in ("x", "W", "A", "\n", "1"):
        assert not t.press(key, 0.0), key
    assert t.command(0.0) == ([0.0] * 3, [0.0] * 3, None)
    with pytest.raises(ValueError, match="speed"):
        KeyboardTeleop(0.0, HOLD)


def test_refuses_to_start_without_a_terminal():
    proc = subprocess.run([sys.executable, "-m", "mechanic_rl_ros.nodes.teleop_keyboard_node"], cwd=REPO,
                          env=ros_env(fresh_domain_id()), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "stdin is not a terminal" in proc.stderr, proc.stderr


def test_keys_typed_in_a_terminal_arrive_as_twist_and_joy(tmp_path):
    domain = fresh_domain_id()
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    log = tmp_path / "teleop_keyboard.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mechanic_rl_ros.nodes.teleop_keyboard_node", "--ros-args",
                                 "-p", "key_hold:=1.0"], cwd=REPO, env=ros_env(domain), stdin=slave, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    probe = Probe(domain, "teleop_keyboard_probe")
    twists = probe.record(Twist, topics.TELEOP_TWIST.name, topics.TELEOP_TWIST.qos)
    joys = probe.record(Joy, topics.TELEOP_JOY.name, topics.TELEOP_JOY.qos)
    spin_until = probe.spin_until

    try:
        assert spin_until(lambda: twists and joys, 20), log.read_text()  # streaming zeros before any key
        assert twists[-1].linear.x == 0.0 and list(joys[-1].buttons) == [0, 0]
        os.write(master, b"w")
        assert spin_until(lambda: twists[-1].linear.x > 0, 5), log.read_text()
        assert twists[-1].linear.x == pytest.approx(SPEED)
        os.write(master, b" ")
        assert spin_until(lambda: list(joys[-1].buttons) == [1, 0], 5), log.read_text()
        n = len(twists)
        spin_until(lambda: False, 0.5)
        assert len(twists) - n >= 5, "the stream goes on at the node's rate (20 Hz) while a key is active"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, log.read_text()
        assert termios.tcgetattr(slave) == before, "terminal settings not restored"
        assert "w / s" in log.read_text(), "the keys are printed at start"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        probe.close()
        os.close(master)
        os.close(slave)
