"""Scene variations (mechanic_rl_ros/sim/world.py): the default world is the training scene, bad worlds are
refused naming the field, and each variation changes what it claims in the real MuJoCo model and images."""
from __future__ import annotations

import math
from dataclasses import fields

import mujoco
import numpy as np
import pytest

from mechanic_rl_ros.sim import make_env
from mechanic_rl_ros.sim.model import SceneConfig, build_mjcf
from mechanic_rl_ros.sim.world import (DISTRACTOR_KEEP_OUT, DISTRACTOR_REGION, FIELDS, World, absolute_spec,
                                       load_world, presets)

SIZE = 64


def _env(world=None, render=False, seed=0, task="lift"):
    return make_env(task=task, render=render, cameras=("scene",), image_size=SIZE, seed=seed, world=world)


def _image(world=None, seed=100000) -> np.ndarray:
    env = _env(world, render=True)
    try:
        obs, _ = env.reset(seed=seed)
        return obs["images"]["scene"]
    finally:
        env.close()


# ------------------------------------------------------------------------------------------ the default world
def test_default_world_writes_the_training_scene_mjcf():
    """Every field at its default goes through the whole mapping and still writes today's MJCF, byte for byte."""
    today = build_mjcf(SceneConfig())
    assert build_mjcf(World().scene_config()) == today
    for spec in (None, "", "default", World()):
        env = _env(spec)
        assert build_mjcf(env.sim.config.scene) == today
        assert env.sim.config == World().sim_config()
        env.close()


def test_default_world_starts_every_episode_where_the_training_scene_does():
    plain, world = _env(None), _env("default")
    for seed in (0, 1, 100000, 100001):
        a, b = plain.reset(seed=seed)[0], world.reset(seed=seed)[0]
        for key in ("qpos", "gripper", "task_state"):
            np.testing.assert_array_equal(a[key], b[key])
        assert plain.sim.model.nbody == world.sim.model.nbody


def test_a_look_only_world_keeps_the_physics():
    """A colour change starts the same episodes and steps the same physics as the training scene."""
    plain, red = _env(None), _env("cube_color=[0.1,0.25,0.85]")
    for env in (plain, red):
        env.reset(seed=3)
    for _ in range(3):
        a = plain.step(plain.sim.qpos().tolist() + [0.04])[0]
        b = red.step(red.sim.qpos().tolist() + [0.04])[0]
    np.testing.assert_array_equal(a["task_state"], b["task_state"])


# ------------------------------------------------------------------------------------------ refusing bad worlds
@pytest.mark.parametrize("spec, field, expected", [
    ("cube_mass=5", "cube_mass", "[0.01, 2] kg"),
    ("cube_mass=heavy", "cube_mass", "a number"),
    ("cube_mass=true", "cube_mass", "a number"),
    ("cube_size=0.1", "cube_size", "[0.03, 0.07] m"),
    ("camera_fovy=10", "camera_fovy", "[20, 90] deg"),
    ("camera_position_offset=[0,0.5,0]", "camera_position_offset", "3 numbers, each in [-0.1, 0.1] m"),
    ("camera_position_offset=[0,0.01]", "camera_position_offset", "3 numbers"),
    ("camera_rotation_offset=[45,0,0]", "camera_rotation_offset", "[-20, 20] deg"),
    ("light_color=[1,2,0]", "light_color", "each in [0, 1]"),
    ("light_direction=[0,0,1]", "light_direction", "z component < 0"),
    ("light_intensity=-1", "light_intensity", "[0, 3]"),
    ("table_height=0.5", "table_height", "[-0.1, 0.1] m"),
    ("table_texture=wood", "table_texture", "one of ['checker', 'flat']"),
    ("distractors=9", "distractors", "a whole number in [0, 8]"),
    ("distractors=2.5", "distractors", "a whole number"),
    ("cube_friction=.nan", "cube_friction", "[0.1, 2]"),
])
def test_values_outside_the_range_are_refused_naming_the_field(spec, field, expected):
    with pytest.raises(ValueError) as err:
        load_world(spec)
    assert f"world field {field}" in str(err.value) and expected in str(err.value), err.value


def test_unknown_fields_are_refused_in_overrides_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"unknown world field\(s\) \['cube_weight'\]; expected some of"):
        load_world("cube_weight=0.3")
    f = tmp_path / "w.yaml"
    f.write_text("cube_mass: 0.2\nlight: dim\n")
    with pytest.raises(ValueError, match=r"w.yaml.*unknown world field\(s\) \['light'\]"):
        load_world(str(f))


def test_malformed_files_and_specs_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cube_mass: [0.2\n")
    with pytest.raises(ValueError, match="bad.yaml.*not valid YAML"):
        load_world(str(bad))
    listed = tmp_path / "list.yaml"
    listed.write_text("- cube_mass\n")
    with pytest.raises(ValueError, match="list.yaml.*expected a mapping"):
        load_world(str(listed))
    with pytest.raises(ValueError, match="cannot be read"):
        load_world(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=r"no such preset; expected one of \['default', .*'dim_light'"):
        load_world("dimlight")
    with pytest.raises(ValueError, match="unbalanced brackets"):
        load_world("camera_fovy=50 light_color=[1,1")
    with pytest.raises(ValueError, match="world field camera_fovy"):
        World(camera_fovy="50")


def test_presets_load_and_overrides_apply_on_top(tmp_path, monkeypatch):
    names = presets()
    for name in ("camera_shift_2cm", "dim_light", "blue_cube", "heavy_cube", "distractors", "table_up_3cm"):
        assert name in names
    for name in names:
        assert not load_world(name).is_default(), name
    w = load_world("dim_light cube_mass=0.3 camera_position_offset=[0, 0.02, 0]")
    assert (w.light_intensity, w.cube_mass, w.camera_position_offset) == (0.4, 0.3, (0.0, 0.02, 0.0))
    f = tmp_path / "mine.yaml"
    f.write_text("# a file of my own\ncube_size: 0.04\n")
    assert load_world(f"{f} cube_size=0.06").cube_size == 0.06
    monkeypatch.chdir(tmp_path)  # a relative path is taken from the current directory, once
    assert absolute_spec("mine.yaml cube_mass=0.2") == f"{f.resolve()} cube_mass=0.2"
    assert absolute_spec("dim_light cube_mass=0.2") == "dim_light cube_mass=0.2"


def test_every_field_documents_unit_range_and_meaning():
    for f in fields(World):
        assert f.metadata["doc"] and f.name in FIELDS
        assert f.metadata["kind"] == "choice" or None not in f.metadata["range"]


# ------------------------------------------------------------------------------------------ what each one changes
def test_camera_light_and_colour_variations_change_the_image_physics_ones_do_not():
    base = _image()
    for spec in ("camera_shift_2cm", "camera_position_offset=[0,0,0.01]", "camera_rotation_offset=[0,2,0]",
                 "camera_fovy=50", "dim_light", "light_color=[1,0.7,0.5]", "light_direction=[0.3,-0.3,-1]",
                 "blue_cube", "grey_table", "table_color2=[0.3,0.3,0.3]", "distractors=4"):
        img = _image(spec)
        assert img.shape == base.shape and np.abs(img.astype(int) - base).sum() > 0, spec
    for spec in ("heavy_cube", "slippery_cube"):
        np.testing.assert_array_equal(_image(spec), base, err_msg=spec)
    # the camera keeps its orientation when it moves: aimed at a shifted target, not at the old one
    model = _env("camera_shift_2cm").sim.model
    plain = _env().sim.model
    cam, cam0 = model.camera("scene"), plain.camera("scene")
    np.testing.assert_allclose(model.cam_pos[cam.id] - plain.cam_pos[cam0.id], [0, 0.02, 0], atol=1e-9)
    np.testing.assert_allclose(model.cam_quat[cam.id], plain.cam_quat[cam0.id], atol=1e-9)
    assert model.cam_fovy[cam.id] == plain.cam_fovy[cam0.id]
    assert _env("wide_fov").sim.model.cam_fovy[cam.id] == 50.0


def test_camera_rotation_turns_the_view_by_the_given_angle():
    plain = _env().sim.model
    for angles in ([5, 0, 0], [0, -4, 0], [0, 0, 10]):
        turned = _env(f"camera_rotation_offset=[{','.join(map(str, angles))}]").sim.model
        cam = plain.camera("scene").id
        q0, q1 = plain.cam_quat[cam], turned.cam_quat[cam]
        angle = 2 * math.degrees(math.acos(min(1.0, abs(float(np.dot(q0, q1))))))
        assert angle == pytest.approx(max(map(abs, angles)), abs=1e-6), angles


def test_cube_size_mass_friction_in_the_model():
    m = _env("cube_size=0.06 cube_mass=0.5 cube_friction=0.3").sim.model
    g = m.geom("cube")
    np.testing.assert_allclose(m.geom_size[g.id], [0.03, 0.03, 0.03])
    assert m.body_mass[m.body("cube").id] == pytest.approx(0.5)
    assert m.geom_friction[g.id][0] == pytest.approx(0.3)
    # the cube's friction decides its contact with the fingertip pads (which otherwise have priority)
    assert m.geom_priority[g.id] > m.geom_priority[m.geom("leftfinger_pad").id]
    plain = _env().sim.model
    assert plain.geom_priority[plain.geom("cube").id] < plain.geom_priority[plain.geom("leftfinger_pad").id]


def test_a_slippery_cube_slides_where_the_training_cube_sticks():
    """Tilt gravity by 25 degrees: friction 1.0 holds the cube on the table, 0.3 (< tan 25 deg) does not."""
    moved = {}
    for spec in (None, "cube_friction=0.3"):
        env = _env(spec)
        env.reset(seed=0)
        m, d = env.sim.model, env.sim.data
        m.opt.gravity[:] = 9.81 * np.array([math.sin(math.radians(25)), 0.0, -math.cos(math.radians(25))])
        start = env.sim.cube_pose()[:2].copy()
        for _ in range(200):
            mujoco.mj_step(m, d)
        moved[spec] = float(np.linalg.norm(env.sim.cube_pose()[:2] - start))
    assert moved[None] < 0.005 < moved["cube_friction=0.3"], moved


def test_table_height_moves_the_cube_the_goal_the_success_and_the_workspace_floor():
    for th in (-0.03, 0.04):
        env, plain = _env(f"table_height={th}"), _env()
        env.reset(seed=5)
        plain.reset(seed=5)
        np.testing.assert_allclose(env.sim.cube_pose()[:3], plain.sim.cube_pose()[:3] + [0, 0, th], atol=1e-12)
        m = env.sim.model
        top = m.geom_pos[m.geom("table").id][2] + m.geom_size[m.geom("table").id][2]
        assert top == pytest.approx(th)
        assert env.sim.config.safety.workspace_min[2] == pytest.approx(plain.sim.config.safety.workspace_min[2] + th)
        assert env.task.goal(env.sim)[2] == pytest.approx(th + 0.025 + 0.10)
        # the cube resting on the table is not lifted; 0.1 m above it is
        assert not env.task.evaluate(env.sim).success
        pose = env.sim.cube_pose()
        env.sim.data.qpos[env.sim._cube_qpos + 2] = pose[2] + 0.101
        mujoco.mj_forward(env.sim.model, env.sim.data)
        assert env.task.evaluate(env.sim).success
        push = _env(f"table_height={th}", task="push")
        push.reset(seed=1)
        assert push.sim.goal_pos()[2] == pytest.approx(th)


@pytest.mark.parametrize("spec", ["table_height=0.05", "table_height=-0.05 cube_size=0.04", "big_cube"])
def test_the_scripted_expert_lifts_in_a_changed_world(spec):
    """The clean expert reads the table and the cube from the world, so it still lifts (seed 0 succeeds in the
    training scene)."""
    env = _env(spec)
    expert = env.expert(noise=0.0, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(env.max_steps):
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            break
    assert info["success"], spec


def test_distractors_are_loose_boxes_on_the_table_away_from_the_cube():
    m = _env("distractors=8 table_height=0.02").sim.model
    names = [m.body(i).name for i in range(m.nbody) if m.body(i).name.startswith("distractor")]
    assert len(names) == 8
    (kx0, kx1), (ky0, ky1) = DISTRACTOR_KEEP_OUT
    (x0, x1), (y0, y1) = DISTRACTOR_REGION
    for name in names:
        b = m.body(name)
        g = m.geom(name)
        x, y, z = m.body_pos[b.id]
        half = m.geom_size[g.id][0]
        assert x0 <= x - half and x + half <= x1 and y0 <= y - half and y + half <= y1
        assert not (kx0 < x + half and x - half < kx1 and ky0 < y + half and y - half < ky1), name
        assert z == pytest.approx(0.02 + half, abs=1e-4)
        assert m.jnt_type[m.body_jntadr[b.id]] == mujoco.mjtJoint.mjJNT_FREE  # the arm can push them about
        assert m.geom_contype[g.id] & m.geom_conaffinity[m.geom("fr3_link7_housing").id]
    # the same seed lays out the same boxes; another seed another layout
    assert World(distractors=3).distractor_boxes() == World(distractors=3).distractor_boxes()
    assert World(distractors=3).distractor_boxes() != World(distractors=3, distractor_seed=1).distractor_boxes()
    # at rest they stay where they are placed, and every reset puts back one a test moved
    env = _env("distractors=4")
    env.reset(seed=0)
    d, m = env.sim.data, env.sim.model
    adr = m.jnt_qposadr[m.joint("distractor0_joint").id]
    start = d.qpos[adr:adr + 3].copy()
    d.qpos[adr] += 0.05
    env.reset(seed=1)
    np.testing.assert_allclose(d.qpos[adr:adr + 3], start)


def test_operator_follows_the_cube_and_the_table():
    assert World().operator_overrides() == {}
    o = World(cube_size=0.06, table_height=-0.02).operator_overrides()
    assert o["cube_half_size"] == pytest.approx(0.03) and o["table_height"] == -0.02
    assert 0.06 < o["closed_width"] <= 0.08


def test_eval_job_takes_a_world(tmp_path, capsys):
    from mechanic_rl_ros.jobs import evaluate

    assert evaluate.main(["--expert", "--noise", "0", "--episodes", "1", "--video-episodes", "0",
                          "--world", "table_up_3cm cube_size=0.04", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "in world 'table_up_3cm cube_size=0.04'" in out and "success 1/1" in out
    assert evaluate.main(["--expert", "--episodes", "1", "--world", "cube_mass=7", "--out", str(tmp_path)]) == 2
    assert "world field cube_mass: got 7; expected a number in [0.01, 2] kg" in capsys.readouterr().err
