"""teleop_keyboard_node: take over the arm from a terminal, for people without a SpaceMouse or a gamepad.

Run it in its own terminal (it reads single keys from stdin, so not under ``ros2 launch``)::

    ros2 run mechanic_rl_ros teleop_keyboard_node

It publishes what spacenav_node would, on the same topics (policy_node's ``teleop_*`` parameters read them):
``geometry_msgs/Twist`` in device units on ``twist_topic`` and ``sensor_msgs/Joy`` on ``joy_topic``, both at
``rate`` Hz (wall clock), zeros while no key is active, so the stream never looks lost to policy_node.

Keys (TCP motion in the robot base frame ``fr3_link0``; each at ``speed`` device units, 0.6 = 0.09 m/s and
0.48 rad/s with policy_node's default scales)::

    w / s    +x / -x        r / f    +z / -z          space   close the gripper (Joy button close_button)
    a / d    +y / -y        q / e    yaw + / yaw -    o       open the gripper  (Joy button open_button)
    h        hold: the button of the gripper's last commanded state, so the intervention goes on without motion
    Ctrl-C   quit (the terminal is restored)

A terminal reports no key release: a key acts for ``key_hold`` seconds after its last press, and the
terminal's auto-repeat refreshes it while the key is held down. Keys on different axes combine; the opposite
key of an axis replaces the first. Desktops wait 250-660 ms before the first auto-repeat: with a shorter
``key_hold`` a held key pauses once after its press (``key_hold:=0.7``, or ``xset r rate 200 30``, avoids it).
Keys are lower case (Caps Lock off); ``h`` knows only what this node last sent: press ``space`` or ``o``
once first.
"""
from __future__ import annotations

import atexit
import os
import re
import select
import sys
import termios
import time
import tty

import rclpy
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Joy

from mechanic_rl_ros.control.teleop import CLOSE, OPEN
from mechanic_rl_ros.nodes.common import Param, declare_parameters, run_node
from mechanic_rl_ros.wire import topics

#: key -> (Twist component: 0-2 linear x y z, 3-5 angular x y z, sign)
MOTION_KEYS = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
               "q": (5, 1.0), "e": (5, -1.0)}
GRIPPER_KEYS = {" ": CLOSE, "o": OPEN}
HOLD_KEY = "h"
HELP = __doc__[__doc__.index("Keys ("):__doc__.index("A terminal")].rstrip().replace("``", "").replace("::", ":")
_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)?", re.S)  # arrow keys, function keys, Alt+key

PARAMETERS = [
    Param("rate", 20.0, "[Hz, wall clock] Twist and Joy publishing rate; policy_node counts a stream silent for "
          "teleop_timeout (0.5 s) as lost, so keep it >= 10", range=(5.0, 200.0)),
    Param("speed", 0.6, "[device units] Twist component of a pressed key (policy_node: x teleop_linear_scale "
          "m/s, x teleop_angular_scale rad/s); above policy_node's teleop_deadband (0.05)", range=(0.06, 1.0)),
    Param("key_hold", 0.3, "[s, wall clock] a key acts this long after its last press or auto-repeat",
          range=(0.05, 5.0)),
    Param("twist_topic", topics.TELEOP_TWIST.name, "geometry_msgs/Twist out (policy_node's teleop_twist_topic)"),
    Param("joy_topic", topics.TELEOP_JOY.name, "sensor_msgs/Joy out (policy_node's teleop_joy_topic)"),
    Param("close_button", 0, "Joy button index space presses (policy_node's teleop_close_button)", range=(0, 31)),
    Param("open_button", 1, "Joy button index o presses (policy_node's teleop_open_button)", range=(0, 31)),
]


def keys_from_bytes(data: bytes) -> list[str]:
    """The single-character keys in what the terminal sent; escape sequences (arrows, F-keys) are dropped."""
    return list(_ESCAPE.sub("", data.decode("utf-8", errors="ignore")))


class KeyboardTeleop:
    """Keys -> (Twist, gripper button) without ROS: what is active at a time ``now`` [s] (module docstring)."""

    def __init__(self, speed: float = 0.6, key_hold: float = 0.3):
        if not 0 < speed <= 1 or not key_hold > 0:
            raise ValueError(f"speed {speed}, key_hold {key_hold}: expected 0 < speed <= 1 and key_hold > 0")
        self.speed, self.key_hold = float(speed), float(key_hold)
        self._axes: dict[int, tuple[float, float]] = {}   # component -> (value, active until)
        self._button: tuple[str, float] | None = None     # (CLOSE | OPEN, active until)
        #: the gripper state this node last asked for (None: no gripper key yet)
        self.gripper: str | None = None

    def press(self, key: str, now: float) -> bool:
        """One key press (or auto-repeat) at ``now``; False for a key that does nothing."""
        until = now + self.key_hold
        if key in MOTION_KEYS:
            axis, sign = MOTION_KEYS[key]
            self._axes[axis] = (sign * self.speed, until)
        elif key in GRIPPER_KEYS:
            self.gripper = GRIPPER_KEYS[key]
            self._button = (self.gripper, until)
        elif key == HOLD_KEY and self.gripper is not None:
            self._button = (self.gripper, until)
        else:
            return False
        return True

    def command(self, now: float) -> tuple[list[float], list[float], str | None]:
        """(linear xyz, angular xyz) [device units] and the gripper button held (CLOSE, OPEN or None)."""
        twist = [0.0] * 6
        for axis, (value, until) in self._axes.items():
            if now <= until:
                twist[axis] = value
        held = self._button[0] if self._button is not None and now <= self._button[1] else None
        return twist[:3], twist[3:], held


class TeleopKeyboardNode(Node):
    def __init__(self):
        super().__init__("teleop_keyboard")
        cfg = declare_parameters(self, PARAMETERS)
        if cfg["close_button"] == cfg["open_button"]:
            raise ValueError(f"parameters close_button / open_button: both {cfg['close_button']}; expected two "
                             "different button indices")
        self.teleop = KeyboardTeleop(cfg["speed"], cfg["key_hold"])
        self.buttons = {CLOSE: cfg["close_button"], OPEN: cfg["open_button"]}
        self.failed = False
        self.twist_pub = self.create_publisher(Twist, cfg["twist_topic"], topics.TELEOP_TWIST.publisher)
        self.joy_pub = self.create_publisher(Joy, cfg["joy_topic"], topics.TELEOP_JOY.publisher)
        self.fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(self.fd)
        atexit.register(self._restore_terminal)  # also if the process ends some other way
        tty.setcbreak(self.fd)  # single keys, no echo; Ctrl-C still raises SIGINT (run_node's clean shutdown)
        print(f"teleop_keyboard: publishing {cfg['twist_topic']} and {cfg['joy_topic']} at {cfg['rate']:g} Hz\n"
              f"{HELP}", flush=True)
        self.create_timer(1.0 / cfg["rate"], self._tick, clock=rclpy.clock.Clock())

    def _read_keys(self) -> list[str]:
        data = b""
        while select.select([self.fd], [], [], 0.0)[0]:
            try:
                chunk = os.read(self.fd, 256)
            except OSError:  # EIO: the terminal hung up
                chunk = b""
            if not chunk:  # the terminal is gone
                if not self.failed:
                    self.get_logger().error("stdin closed (terminal gone): stopping")
                self.failed = True
                break
            data += chunk
        return keys_from_bytes(data)

    def _tick(self) -> None:
        now = time.monotonic()
        for key in self._read_keys():
            if not self.teleop.press(key, now) and key == HOLD_KEY:
                self.get_logger().warning("h holds the gripper's last state: press space or o once first",
                                          throttle_duration_sec=2.0)
        self._publish(*self.teleop.command(now))

    def _publish(self, linear, angular, held) -> None:
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.linear.z = linear
        twist.angular.x, twist.angular.y, twist.angular.z = angular
        joy = Joy(axes=[float(v) for v in (*linear, *angular)], buttons=[0] * (max(self.buttons.values()) + 1))
        joy.header.stamp = self.get_clock().now().to_msg()
        if held is not None:
            joy.buttons[self.buttons[held]] = 1
        self.twist_pub.publish(twist)
        self.joy_pub.publish(joy)

    def _restore_terminal(self) -> None:
        if self._saved is not None:
            saved, self._saved = self._saved, None
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:  # the terminal is gone: nothing left to restore
                pass

    def destroy_node(self) -> None:
        try:
            self._publish([0.0] * 3, [0.0] * 3, None)  # hand back at once rather than look like a lost stream
        finally:
            self._restore_terminal()
            super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    if not sys.stdin.isatty():
        print("teleop_keyboard_node: stdin is not a terminal; it reads single key presses, so run it in a "
              "terminal of its own (ros2 run mechanic_rl_ros teleop_keyboard_node), not under ros2 launch or a "
              "pipe", file=sys.stderr)
        return 2
    return run_node(TeleopKeyboardNode, argv, failed=lambda node: node.failed)


if __name__ == "__main__":
    sys.exit(main())
