"""ObservationAssembler: joint states matched by name, stale and skewed inputs refused."""
import numpy as np
import pytest

from mechanic_rl_ros.control import fr3
from mechanic_rl_ros.control.observation import ObservationAssembler, StaleObservation


def _js(names=fr3.ALL_JOINT_NAMES, q=None):
    q = np.append(fr3.Q_HOME, [0.02, 0.02]) if q is None else q
    return list(names), list(q), [0.0] * len(q)


def test_joint_states_matched_by_name_in_any_order():
    a = ObservationAssembler(cameras=(), lowdim_keys=("qpos", "gripper"))
    names, q, v = _js()
    order = list(reversed(range(9)))
    a.set_joint_state([names[i] for i in order], [q[i] for i in order], [v[i] for i in order], stamp=1.0)
    obs, stamp = a.snapshot(now=1.05)
    np.testing.assert_allclose(obs["qpos"], fr3.Q_HOME, rtol=1e-6)
    assert obs["gripper"][0] == pytest.approx(0.04) and stamp == 1.0


def test_wrong_names_and_nan_are_refused():
    a = ObservationAssembler()
    with pytest.raises(ValueError, match=r"name: missing \['fr3_joint1'"):
        a.set_joint_state(*_js(names=[n.replace("fr3", "panda") for n in fr3.ALL_JOINT_NAMES]), stamp=0.0)
    bad = np.append(fr3.Q_HOME, [0.0, 0.0])
    bad[2] = np.nan
    with pytest.raises(ValueError, match="position: must be finite"):
        a.set_joint_state(*_js(q=bad), stamp=0.0)


def test_stale_missing_and_skewed_inputs():
    a = ObservationAssembler(cameras=("scene",), image_size=8, max_age=0.3, max_skew=0.1)
    a.set_joint_state(*_js(), stamp=10.0)
    with pytest.raises(StaleObservation, match="no image:scene received yet"):
        a.snapshot(10.0)
    a.set_image("scene", np.zeros((8, 8, 3), np.uint8), stamp=9.8)
    with pytest.raises(StaleObservation, match="0.200 s apart"):
        a.snapshot(10.0)
    a.set_image("scene", np.zeros((8, 8, 3), np.uint8), stamp=10.0)
    a.snapshot(10.1)
    with pytest.raises(StaleObservation, match="joints is 0.500 s old"):
        a.snapshot(10.5)
    with pytest.raises(ValueError, match="expected rgb8 8x8"):
        a.set_image("scene", np.zeros((9, 8, 3), np.uint8), stamp=10.0)


def test_due_names_inputs_whose_sample_of_this_instant_has_not_come():
    """Lock-step: the clock of instant t arrives before that instant's joint state (50 Hz) and frame (10 Hz)."""
    a = ObservationAssembler(cameras=("scene",), image_size=8)
    img = np.zeros((8, 8, 3), np.uint8)
    a.set_joint_state(*_js(), stamp=9.98)
    a.set_image("scene", img, stamp=9.9)
    assert a.due(10.0) == []  # one sample each: no rate known, never waited for
    a.set_joint_state(*_js(), stamp=10.0)
    a.set_image("scene", img, stamp=10.0)
    for t in (10.02, 10.04, 10.06, 10.08):
        a.set_joint_state(*_js(), stamp=t)
    # at 10.1: the joint state of 10.1 and the frame of 10.1 are due
    assert a.due(10.1) == ["joints", "image:scene"]
    a.set_joint_state(*_js(), stamp=10.1)
    assert a.due(10.1) == ["image:scene"]
    a.set_image("scene", img, stamp=10.1)
    assert a.due(10.1) == []
    # between frames (10.12) nothing is missing: the next frame belongs to 10.2
    a.set_joint_state(*_js(), stamp=10.12)
    assert a.due(10.12) == []
    # a camera at 5 Hz is not waited for at a 10 Hz tick between its frames
    b = ObservationAssembler(cameras=("scene",), image_size=8)
    b.set_image("scene", img, stamp=9.8)
    b.set_image("scene", img, stamp=10.0)
    assert "image:scene" not in b.due(10.1) and "image:scene" in b.due(10.2)
