"""Scene variations of the simulated world: where the camera is, how the scene is lit, the table, the cube and
clutter on the table -- what changes between a policy's training scene and the one it is deployed in.

A :class:`World` holds one value per variation, each with a unit and a valid range (:data:`FIELDS`, and
``docs/world.md``). The default ``World()`` is exactly the scene the shipped policies were trained in:
:meth:`World.sim_config` leaves a :class:`~mechanic_rl_ros.sim.fr3_sim.SimConfig` unchanged, so
``build_mjcf`` writes the same MJCF text and every task starts in the same states.

A user selects a world by a *spec* string (:func:`load_world`): a preset name (a YAML file in
``config/worlds/``), the path of a YAML file, or nothing, optionally followed by ``field=value`` overrides
separated by spaces, e.g. ``"camera_shift_2cm cube_mass=0.3"`` or ``"table_height=-0.03"``. A world file is a
YAML mapping of field names to values. Anything outside a field's range, of the wrong type or unknown is
refused with a ``ValueError`` naming the field and what it accepts.

Table height moves everything that rests on the table: the table top is at ``table_height`` in the robot's
base frame (fr3_link0; 0 in the training scene), the cube starts on it, the lift is measured from it, the goal
disc lies on it, the safety filter's workspace floor follows it, and the scripted expert and the simulated
operator are told.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mechanic_rl_ros.config_files import load_yaml, spec_items, split_spec
from mechanic_rl_ros.resources import package_file
from mechanic_rl_ros.sim.model import DISTRACTOR_MASS, SceneConfig  # noqa: F401 (DISTRACTOR_MASS: docs)

#: directory of the shipped presets, under the package's share directory
PRESET_DIR = ("config", "worlds")
#: the spec that means the training scene
DEFAULT_SPEC = "default"

_DEFAULT_SCENE = SceneConfig()
#: [m] half edge range of a distractor box
DISTRACTOR_HALF_SIZE = (0.012, 0.02)
#: [m] where distractors may stand on the table (x range, y range, base frame) ...
DISTRACTOR_REGION = ((0.3, 0.72), (-0.26, 0.26))
#: [m] ... outside this box, which holds every start position of the lift and push cubes and the push goals
DISTRACTOR_KEEP_OUT = ((0.35, 0.76), (-0.13, 0.13))
#: the table's checker colours (SceneConfig's), for the docs
TABLE_TEXTURES = ("checker", "flat")


def _spec(default, unit: str, doc: str, low=None, high=None, kind: str = "float", choices=None):
    """A :class:`World` field: default, unit, meaning, inclusive range (per component for vectors), kind."""
    return field(default=default, metadata={"unit": unit, "doc": doc, "range": (low, high), "kind": kind,
                                            "choices": choices})


@dataclass(frozen=True)
class World:
    """One setting of every scene variation; ``World()`` is the training scene. See the module docstring."""

    # the scene camera (the policy's input)
    camera_position_offset: tuple[float, float, float] = _spec(
        (0.0, 0.0, 0.0), "m", "scene camera moved by (x, y, z) in the robot base frame (x away from the robot, "
        "y to its left, z up), its orientation kept", -0.1, 0.1, "vec3")
    camera_rotation_offset: tuple[float, float, float] = _spec(
        (0.0, 0.0, 0.0), "deg", "scene camera turned about its own axes by (pan, tilt, roll): pan about the "
        "image's up axis (+ looks left), tilt about its right axis (+ looks up), roll about the viewing axis "
        "(+ turns the camera counter-clockwise as seen from behind it)", -20.0, 20.0, "vec3")
    camera_fovy: float = _spec(_DEFAULT_SCENE.scene_camera_fovy, "deg", "vertical field of view of the scene "
                               "camera", 20.0, 90.0)
    # lighting
    light_direction: tuple[float, float, float] = _spec(
        (-0.2, 0.3, -1.0), "1", "direction the key light shines in (base frame, any length; z must be < 0, "
        "downwards)", -1.0, 1.0, "vec3")
    light_intensity: float = _spec(1.0, "1", "brightness of the key light and the headlight, relative to "
                                   "the training scene's", 0.0, 3.0)
    light_color: tuple[float, float, float] = _spec((1.0, 1.0, 1.0), "rgb", "colour of the light (red, green, "
                                                    "blue)", 0.0, 1.0, "rgb")
    # the table
    table_height: float = _spec(0.0, "m", "height of the table top above the robot's base plate; the cube, the "
                                "goal, the lift and the workspace floor move with it", -0.1, 0.1)
    table_texture: str = _spec("checker", "", "table top pattern: checker (two colours) or flat (table_color)",
                               kind="choice", choices=TABLE_TEXTURES)
    table_color: tuple[float, float, float] = _spec((0.55, 0.45, 0.35), "rgb", "table colour (checker: the "
                                                    "first squares)", 0.0, 1.0, "rgb")
    table_color2: tuple[float, float, float] = _spec((0.5, 0.4, 0.3), "rgb", "checker: the other squares' "
                                                     "colour", 0.0, 1.0, "rgb")
    # the cube
    cube_size: float = _spec(2 * _DEFAULT_SCENE.cube_half_size, "m", "cube edge length (the open hand is "
                             "0.08 m wide)", 0.03, 0.07)
    cube_mass: float = _spec(_DEFAULT_SCENE.cube_mass, "kg", "cube mass", 0.01, 2.0)
    cube_friction: float = _spec(_DEFAULT_SCENE.friction, "1", "sliding friction coefficient of every contact "
                                 "of the cube (fingertip pads, table)", 0.1, 2.0)
    cube_color: tuple[float, float, float] = _spec((0.85, 0.15, 0.1), "rgb", "cube colour", 0.0, 1.0, "rgb")
    # clutter
    distractors: int = _spec(0, "", "number of small loose boxes on the table, away from where the cube "
                             "starts; the arm can bump them", 0, 8, "int")
    distractor_seed: int = _spec(0, "", "seed of the distractors' places, sizes and colours (fixed: the same "
                                 "layout every episode)", 0, 2**31 - 1, "int")

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _check(f, getattr(self, f.name)))
        if self.light_direction[2] >= 0:
            raise ValueError(f"world field light_direction: got {list(self.light_direction)}; expected a "
                             "z component < 0 (the light shines down on the table)")

    # ---------------------------------------------------------------- what it makes
    def is_default(self) -> bool:
        return self == World()

    def changes(self) -> dict[str, Any]:
        """The fields that differ from the training scene, as plain values."""
        base = World()
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}

    def scene_config(self, base: SceneConfig | None = None) -> SceneConfig:
        """``base`` (default ``SceneConfig()``) with this world's variations; unchanged for the default world."""
        s = base or SceneConfig()
        d = World()
        k = self.light_intensity
        col = np.asarray(self.light_color)

        def light(values):
            return tuple(float(v) for v in np.asarray(values) * k * col)

        return replace(
            s,
            scene_camera_pos=tuple(float(a + b) for a, b in zip(s.scene_camera_pos, self.camera_position_offset)),
            scene_camera_target=tuple(float(a + b) for a, b in zip(s.scene_camera_target,
                                                                      self.camera_position_offset)),
            scene_camera_rotation=self.camera_rotation_offset,
            scene_camera_fovy=self.camera_fovy,
            light_dir=self.light_direction,
            light_diffuse=light(s.light_diffuse) if (k, tuple(col)) != (1.0, (1.0, 1.0, 1.0)) else s.light_diffuse,
            headlight_ambient=(light(s.headlight_ambient) if (k, tuple(col)) != (1.0, (1.0, 1.0, 1.0))
                               else s.headlight_ambient),
            headlight_diffuse=(light(s.headlight_diffuse) if (k, tuple(col)) != (1.0, (1.0, 1.0, 1.0))
                               else s.headlight_diffuse),
            table_height=self.table_height,
            table_texture=self.table_texture,
            table_rgb1=self.table_color,
            table_rgb2=self.table_color2,
            cube_half_size=self.cube_size / 2 if self.cube_size != d.cube_size else s.cube_half_size,
            cube_mass=self.cube_mass,
            cube_friction=None if self.cube_friction == d.cube_friction else self.cube_friction,
            cube_rgba=(*self.cube_color, 1.0),
            distractors=self.distractor_boxes(),
        )

    def sim_config(self, base=None):
        """``base`` (a :class:`~mechanic_rl_ros.sim.fr3_sim.SimConfig`, default ``SimConfig()``) with this
        world's scene, and the safety filter's workspace floor (the table top) moved with the table."""
        from mechanic_rl_ros.sim.fr3_sim import SimConfig

        base = base or SimConfig()
        safety = base.safety
        if self.table_height != 0.0:
            lo = list(safety.workspace_min)
            lo[2] += self.table_height
            safety = replace(safety, workspace_min=tuple(lo))
        return replace(base, scene=self.scene_config(base.scene), safety=safety)

    def distractor_boxes(self) -> tuple[tuple[tuple[float, float, float], float, tuple[float, ...]], ...]:
        """The distractors as ((x, y, z) centre [m], half edge [m], rgba): drawn from ``distractor_seed``, in
        :data:`DISTRACTOR_REGION` outside :data:`DISTRACTOR_KEEP_OUT`, apart from each other, on the table."""
        rng = np.random.default_rng(self.distractor_seed)
        (x0, x1), (y0, y1) = DISTRACTOR_REGION
        (kx0, kx1), (ky0, ky1) = DISTRACTOR_KEEP_OUT
        boxes: list = []
        tries = 0
        while len(boxes) < self.distractors:
            tries += 1
            if tries > 10_000:  # cannot happen for <= 8 boxes of this size; a guard, not a rule
                raise RuntimeError("could not place the distractors")
            half = float(rng.uniform(*DISTRACTOR_HALF_SIZE))
            x, y = float(rng.uniform(x0 + half, x1 - half)), float(rng.uniform(y0 + half, y1 - half))
            if kx0 - half < x < kx1 + half and ky0 - half < y < ky1 + half:
                continue
            if any(max(abs(x - p[0]), abs(y - p[1])) < half + h + 0.02 for p, h, _ in boxes):
                continue
            rgb = tuple(float(v) for v in rng.uniform(0.15, 0.85, 3))
            boxes.append(((round(x, 4), round(y, 4), round(self.table_height + half, 4)), round(half, 4),
                          (*(round(v, 3) for v in rgb), 1.0)))
        return tuple(boxes)

    def operator_overrides(self) -> dict[str, float]:
        """The simulated operator's parameters (sim/operator.py, config/operator.yaml) this world changes: the
        cube's half size, the table's height and the opening below which the hand counts as closed (the cube's
        width plus the default's 15 mm)."""
        d = World()
        out: dict[str, float] = {}
        if self.cube_size != d.cube_size:
            out["cube_half_size"] = self.cube_size / 2
            out["closed_width"] = round(min(0.079, self.cube_size + 0.015), 6)
        if self.table_height != d.table_height:
            out["table_height"] = self.table_height
        return out


#: every field of :class:`World`, by name
FIELDS = {f.name: f for f in fields(World)}


def describe_fields() -> list[tuple[str, str, str, str, str]]:
    """(name, unit, range, default, meaning) of every field, for ``--help`` and the docs."""
    rows = []
    for f in fields(World):
        m = f.metadata
        if m["kind"] == "choice":
            rng = " or ".join(m["choices"])
        else:
            low, high = m["range"]
            rng = (f"[{low}, {high}]" if m["kind"] == "int" else f"[{low:g}, {high:g}]") + (
                " each" if m["kind"] in ("vec3", "rgb") else "")
        rows.append((f.name, m["unit"], rng, str(_plain(f.default)), m["doc"]))
    return rows


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _expected(f) -> str:
    m = f.metadata
    low, high = m["range"]
    unit = f" {m['unit']}" if m["unit"] not in ("", "1", "rgb") else ""
    if m["kind"] == "choice":
        return f"one of {list(m['choices'])}"
    if m["kind"] == "int":
        return f"a whole number in [{low}, {high}]"
    if m["kind"] == "vec3":
        return f"3 numbers, each in [{low:g}, {high:g}]{unit}"
    if m["kind"] == "rgb":
        return f"3 numbers (red, green, blue), each in [{low:g}, {high:g}]"
    return f"a number in [{low:g}, {high:g}]{unit}"


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check(f, value):
    """``value`` of field ``f`` checked and normalised (floats, tuples); ValueError naming the field."""
    m = f.metadata
    kind, (low, high) = m["kind"], m["range"]

    def bad():
        return ValueError(f"world field {f.name}: got {value!r}; expected {_expected(f)}")

    if kind == "choice":
        if not isinstance(value, str) or value not in m["choices"]:
            raise bad()
        return value
    if kind == "int":
        if not _is_number(value) or float(value) != int(value) or not low <= int(value) <= high:
            raise bad()
        return int(value)
    if kind in ("vec3", "rgb"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
            raise bad()
        if not all(_is_number(v) and math.isfinite(v) and low <= v <= high for v in value):
            raise bad()
        return tuple(float(v) for v in value)
    if not _is_number(value) or not math.isfinite(value) or not low <= value <= high:
        raise bad()
    return float(value)


# ------------------------------------------------------------------------- specs and files
def presets() -> list[str]:
    """Names of the shipped presets (``config/worlds/<name>.yaml``)."""
    d = package_file(*PRESET_DIR)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def preset_path(name: str) -> Path:
    return package_file(*PRESET_DIR, f"{name}.yaml")


def world_from_mapping(values: Any, source: str = "world") -> World:
    """A :class:`World` from a mapping of field names to values; ValueError naming an unknown or bad field."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of world fields to values, got {type(values).__name__}")
    unknown = sorted(str(k) for k in values if k not in FIELDS)
    if unknown:
        raise ValueError(f"{source}: unknown world field(s) {unknown}; expected some of {sorted(FIELDS)}")
    try:
        return World(**values)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def _base_path(name: str) -> Path:
    """A preset's file, or ``name`` as a path; ValueError naming the presets when it is neither."""
    looks_like_path = "/" in name or name.endswith((".yaml", ".yml")) or name.startswith(("~", "."))
    if not looks_like_path:
        if re.fullmatch(r"[A-Za-z0-9_\-]+", name) and preset_path(name).is_file():
            return preset_path(name)
        raise ValueError(f"world {name!r}: no such preset; expected one of {[DEFAULT_SPEC, *presets()]}, "
                         f"the path of a world YAML file, or field=value overrides")
    return Path(name).expanduser()


def parse_spec(spec: str | None) -> tuple[Path | None, dict[str, Any]]:
    """(the preset's or file's path or None, the ``field=value`` overrides) of a spec string."""
    first, overrides = split_spec(spec, "world")
    return (None if first in (None, DEFAULT_SPEC) else _base_path(first)), overrides


def load_world(spec: str | World | None = None) -> World:
    """The :class:`World` a spec names (module docstring); ``None``, ``''`` and ``'default'`` are the training scene.

    Raises ``ValueError`` naming the field (or the file, preset or item) and what was expected.
    """
    if isinstance(spec, World):
        return spec
    base, overrides = parse_spec(spec)
    values: dict[str, Any] = {}
    source = "world"
    if base is not None:
        values = load_yaml(base, "world file")  # not yet checked: world_from_mapping does
        source = f"world file {str(base)!r}"
    if overrides:
        source = f"{source} with overrides {sorted(overrides)}" if base is not None else "world overrides"
    return world_from_mapping({**values, **overrides}, source)


def absolute_spec(spec: str) -> str:
    """``spec`` with a relative file path made absolute (from the current directory), so that a process
    started elsewhere reads the same file; presets and overrides are kept as they are."""
    items = spec_items(spec or "", "world")
    if items and "=" not in items[0] and items[0] != DEFAULT_SPEC:
        path = _base_path(items[0])
        if not str(path).startswith(str(package_file(*PRESET_DIR))):
            items[0] = str(path.resolve())
    return " ".join(items) if items else DEFAULT_SPEC
