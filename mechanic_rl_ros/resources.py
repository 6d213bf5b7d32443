"""Where the package's own files are: ``config/``, ``launch/``, ``checkpoints/``.

A node or job that reads a shipped file by default (a YAML config, the RViz
config, the Fast DDS profile, a checkpoint named by default) asks
:func:`share_dir` or :func:`package_file`, so that the file is found the same
way in the three ways the package is installed:

* **source checkout** (``pip install -e .``, ``PYTHONPATH=<checkout>``): the
  package is imported from ``<checkout>/mechanic_rl_ros`` and
  ``<checkout>/package.xml`` names it: the checkout is the share directory, so
  an edit of ``config/*.yaml`` takes effect at once;
* **colcon install**: CMakeLists.txt installs ``config/``, ``launch/`` and
  ``checkpoints/`` to ``<prefix>/share/mechanic_rl_ros``, registered in the
  ament index: :func:`ament_index_python.get_package_share_directory`;
* **pip install** (a wheel): setup.py installs the same directories as data
  files to ``<prefix>/share/mechanic_rl_ros`` of the interpreter's prefix
  (the prefix a colcon install's module also sits under).

Without this, a default built from ``Path(__file__)`` and the checkout layout holds
only in a checkout: installed, it points into ``site-packages`` and every
node dies at start (issue 33).

This module imports nothing of ROS at import time (``ament_index_python`` is
imported on use), so the learning code may use it.
"""
from __future__ import annotations

import sysconfig
from functools import lru_cache
from pathlib import Path

PACKAGE = "mechanic_rl_ros"
#: the package's Python directory (``mechanic_rl_ros/``), wherever it was imported from
PYTHON_PACKAGE_DIR = Path(__file__).resolve().parent


def _source_checkout() -> Path | None:
    """The checkout root when the package is imported from a source checkout, else None."""
    root = PYTHON_PACKAGE_DIR.parent
    manifest = root / "package.xml"
    try:
        return root if f"<name>{PACKAGE}</name>" in manifest.read_text() else None
    except OSError:
        return None


def _ament_share() -> Path | None:
    """The share directory the ament index registers for the package (None: not registered)."""
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (LookupError, ValueError, OSError):  # not registered; no AMENT_PREFIX_PATH
        return None


def _install_prefix_shares() -> list[Path]:
    """``<prefix>/share/mechanic_rl_ros`` of the prefix the module is installed under
    (``<prefix>/lib/pythonX.Y/site-packages/mechanic_rl_ros``) and of the interpreter's data prefix."""
    out = []
    parents = PYTHON_PACKAGE_DIR.parents
    if len(parents) > 3 and parents[1].name.startswith("python") and parents[2].name in ("lib", "lib64"):
        out.append(parents[3] / "share" / PACKAGE)
    out.append(Path(sysconfig.get_path("data")) / "share" / PACKAGE)
    return out


def candidates() -> list[tuple[str, Path]]:
    """Every place looked in, in order, as ``(how it was found, directory)``."""
    out: list[tuple[str, Path]] = []
    checkout = _source_checkout()
    if checkout is not None:
        out.append(("source checkout", checkout))
    ament = _ament_share()
    if ament is not None:
        out.append(("ament index", ament))
    out += [("install prefix", p) for p in _install_prefix_shares()]
    return out


@lru_cache(maxsize=None)
def share_dir() -> Path:
    """The package's share directory: the first of :func:`candidates` that holds ``config/``.

    Raises ``FileNotFoundError`` listing every place looked in.
    """
    looked = candidates()
    for _, path in looked:
        if (path / "config").is_dir():
            return path
    raise FileNotFoundError(
        f"{PACKAGE}: no share directory with config/ found; looked in "
        + ", ".join(f"{p} ({how})" for how, p in looked)
        + ". Install the package with colcon (then source install/setup.sh) or pip, or run from a source checkout")


def package_file(*parts: str) -> Path:
    """``share_dir() / parts``, e.g. ``package_file("config", "rl.yaml")``.

    Never raises, so that module-level defaults can use it: the path is
    returned whether or not the file exists, and a caller that reads it
    reports a missing file with its own context. Without any share directory
    the path is under the first place :func:`candidates` names (it does not
    exist; :func:`share_dir` says where it looked).
    """
    try:
        base = share_dir()
    except FileNotFoundError:
        base = candidates()[0][1]
    return base.joinpath(*parts)


def config_dir() -> Path:
    """The node parameter files and configs: ``<share>/config``."""
    return package_file("config")


def config_file(name: str) -> Path:
    """One shipped config file, ``<share>/config/<name>``."""
    return package_file("config", name)
