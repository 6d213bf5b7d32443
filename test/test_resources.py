"""mechanic_rl_ros.resources finds the package's files in a source checkout and in a pip install
(the colcon install: test_colcon_build.py, test_installed_stack.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mechanic_rl_ros import resources
from rosenv import REPO

SHIPPED = ("config/select.yaml", "config/rl.yaml", "config/policy.yaml", "config/finetune.rviz",
           "config/fastdds_large_frames.xml", "launch/finetune.launch.py", "checkpoints/lift_pretrained/config.json")


def test_a_source_checkout_reads_its_own_files():
    assert resources.share_dir() == REPO
    for rel in SHIPPED:
        assert resources.package_file(*rel.split("/")) == REPO / rel
        assert (REPO / rel).is_file(), rel
    assert resources.config_file("select.yaml") == REPO / "config" / "select.yaml"


def test_a_pip_install_reads_the_files_it_installed(tmp_path):
    """``pip install`` of a copy of the checkout (a wheel: no source tree beside the module) puts config/,
    launch/ and checkpoints/ in <prefix>/share/mechanic_rl_ros, and the installed module finds them there.

    ``--ignore-installed``: without it pip first uninstalls the venv's own (editable) install of the
    package, and every later test that starts a script outside the checkout no longer finds it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "package.xml", "config", "launch", "checkpoints", "mechanic_rl_ros"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(path, src / name)
    def venv_install() -> str:
        """Where the venv itself imports the package from, outside the checkout ('' if it cannot)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run([sys.executable, "-c", "import mechanic_rl_ros; print(mechanic_rl_ros.__file__)"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        return out.stdout.strip()

    before = venv_install()
    prefix = tmp_path / "prefix"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "--ignore-installed", "--prefix", str(prefix),
                          str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert venv_install() == before, "installing a copy elsewhere removed the venv's own install"
    site = next(prefix.glob("lib/python*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("AMENT_PREFIX_PATH", None)
    code = ("import mechanic_rl_ros, mechanic_rl_ros.resources as r\n"
            "print(mechanic_rl_ros.__file__)\n"
            f"for rel in {SHIPPED!r}:\n"
            "    p = r.package_file(*rel.split('/')); print(p, p.is_file())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site)), lines[0]
    share = prefix / "share" / "mechanic_rl_ros"
    assert lines[1:] == [f"{share / rel} True" for rel in SHIPPED]
