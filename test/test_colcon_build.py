"""The ROS-install path: `colcon build` of this package against the venv's
ROS 2 Jazzy as underlay gives a normal ROS install (ament index, node
executables in lib/<pkg>, launch/ and config/ in share/<pkg>)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = "mechanic_rl_ros"
SOURCES = ["package.xml", "CMakeLists.txt", "msg", "srv", PKG, "launch", "config", "checkpoints", "test"]
GENERATED = shutil.ignore_patterns("__pycache__", "*.so", "msg", "srv")


def build_install(ws: Path) -> Path:
    """``colcon build`` of a copy of the package in the workspace ``ws``; its ``install/`` (the session-wide
    fixture ``colcon_install`` of conftest.py: this module and test_installed_stack.py share one build)."""
    src = ws / "src" / PKG
    src.mkdir(parents=True)
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            ignore = GENERATED if name == PKG else shutil.ignore_patterns("__pycache__")
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / name)
    prefix = Path(sys.prefix)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), CMAKE_PREFIX_PATH=str(prefix),
               PATH=f"{prefix / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(prefix / "bin" / "colcon"), "build", "--base-paths", "src", "--event-handlers", "console_direct-",
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return ws / "install"


def _in_install(install: Path, code: str) -> str:
    """Run python code in a shell that sourced the install's setup.sh."""
    shell = f". '{install}/setup.sh' && cd / && '{sys.executable}' -c \"$CODE\""
    env = dict(os.environ, CODE=code)
    env.pop("PYTHONPATH", None)  # the checkout off the path, as for a ROS user
    proc = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_ament_index_finds_package_share(colcon_install):
    out = _in_install(colcon_install, (
        "from ament_index_python.packages import get_package_share_directory as g; print(g('mechanic_rl_ros'))"))
    share = Path(out.strip())
    assert share == colcon_install / PKG / "share" / PKG
    assert (share / "package.xml").is_file()
    for sub in ("launch", "config"):
        source_files = sorted(p.name for p in (REPO / sub).glob("*")) if (REPO / sub).is_dir() else []
        assert sorted(p.name for p in (share / sub).glob("*")) == source_files, sub


def test_node_executables_are_installed(colcon_install):
    nodes = sorted(p.stem for p in (REPO / PKG / "nodes").glob("*_node.py"))
    assert nodes, "the package has no node modules"
    libdir = colcon_install / PKG / "lib" / PKG
    installed = sorted(p.name for p in libdir.iterdir())
    assert installed == nodes
    for n in nodes:
        assert os.access(libdir / n, os.X_OK), n


def test_messages_and_python_package_import_from_the_install(colcon_install):
    out = _in_install(colcon_install, (
        "import mechanic_rl_ros, mechanic_rl_ros.wire, mechanic_rl_ros.optim\n"
        "from mechanic_rl_ros.msg import PolicyWeights, Transition\n"
        "from mechanic_rl_ros.srv import ResetEpisode\n"
        "from mechanic_rl_ros.optim import fused\n"
        "assert fused.available(), fused.unavailable_reason()\n"
        "print(mechanic_rl_ros.__file__)\n"
        "print(PolicyWeights.__module__)\n"))
    first = out.splitlines()[0]
    assert first.startswith(str(colcon_install)), f"imported {first}, not the colcon install"


def test_default_files_come_from_the_install(colcon_install):
    """Every file a node reads by default is the installed one (issue 33: select.yaml was looked for in
    site-packages/config/), and the fused kernels are built and load where fused.py looks."""
    out = _in_install(colcon_install, (
        "from mechanic_rl_ros import resources\n"
        "from mechanic_rl_ros.policy.config import DEFAULT_CONFIG_PATH as policy\n"
        "from mechanic_rl_ros.rl.config import DEFAULT_CONFIG_PATH as rl\n"
        "from mechanic_rl_ros.rl.selection import DEFAULT_SELECT_CONFIG as select\n"
        "from mechanic_rl_ros.stack import description, runner\n"
        "from mechanic_rl_ros.optim import fused\n"
        "print(resources.share_dir())\n"
        "for p in (policy, rl, select, runner.default_config_dir(), description.default_checkpoint('lift'),\n"
        "          fused.LIBRARY_PATH):\n"
        "    print(p, p.exists())\n"))
    share = colcon_install / PKG / "share" / PKG
    lines = out.splitlines()
    assert lines[0] == str(share)
    paths = [line.rsplit(" ", 1) for line in lines[1:]]
    assert [p for p, _ in paths[:5]] == [str(share / "config" / "policy.yaml"), str(share / "config" / "rl.yaml"),
                                         str(share / "config" / "select.yaml"), str(share / "config"),
                                         str(share / "checkpoints" / "lift_pretrained")]
    assert paths[5][0].startswith(str(colcon_install / PKG / "lib")), paths[5]
    assert all(exists == "True" for _, exists in paths), out
