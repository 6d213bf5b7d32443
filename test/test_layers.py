"""The package's layering, read from the source: imports point down the layers, never up, and the
learning core imports no ROS client library or message package."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mechanic_rl_ros"

#: lowest first; a module may import its own layer and the layers before it
LAYERS = [
    {"config_files", "resources"},
    {"optim", "vision"},
    {"control"},
    {"sim", "data"},
    {"policy"},
    {"rl"},
    {"wire", "msg", "srv"},
    {"jobs"},
    {"nodes"},
    {"stack"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
#: what runs without ROS: no rclpy, no ROS message packages, no generated messages of ours
ROS_FREE = {"config_files", "resources", "optim", "vision", "control", "sim", "data", "policy", "rl", "jobs"}
ROS_MODULES = {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "trajectory_msgs", "visualization_msgs",
               "diagnostic_msgs", "builtin_interfaces", "rosgraph_msgs", "launch", "launch_ros"}


def _sources():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG)
        if rel.parts[0] in ("msg", "srv") or rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        yield rel, f


def _layer(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(f: Path, rel: Path):
    """(line, absolute module name) of every import in ``f``, function-level ones included."""
    package = ["mechanic_rl_ros", *rel.parts[:-1]]
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            if mod == "mechanic_rl_ros":
                names = [f"mechanic_rl_ros.{a.name}" for a in node.names]
            for name in names:
                yield node.lineno, name


def test_every_top_level_part_has_a_layer():
    parts = {_layer(rel) for rel, _ in _sources()}
    assert parts <= set(RANK), f"unplaced: {sorted(parts - set(RANK))}; add them to LAYERS"


def test_no_module_imports_upward():
    upward = []
    for rel, f in _sources():
        me = _layer(rel)
        for line, mod in _imports(f, rel):
            parts = mod.split(".")
            if parts[0] != "mechanic_rl_ros" or len(parts) < 2:
                continue
            other = parts[1]
            if RANK.get(other, -1) > RANK[me]:
                upward.append(f"{rel}:{line} ({me}) imports {mod} ({other})")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_the_learning_core_imports_no_ros():
    found = []
    for rel, f in _sources():
        if _layer(rel) not in ROS_FREE:
            continue
        for line, mod in _imports(f, rel):
            parts = mod.split(".")
            if parts[0] in ROS_MODULES or parts[:2] in (["mechanic_rl_ros", "msg"], ["mechanic_rl_ros", "srv"]):
                found.append(f"{rel}:{line} imports {mod}")
    assert not found, "ROS imports in the ROS-free packages:\n" + "\n".join(found)
