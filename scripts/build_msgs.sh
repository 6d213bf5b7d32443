#!/usr/bin/env bash
# Build this package's ROS 2 interfaces (msg/, srv/) against the ROS 2 Jazzy
# wheels in the venv, with plain cmake, and place the generated Python modules
# inside the source package so that `from mechanic_rl_ros.msg import ...` works
# next to the pure-Python sub-packages (an in-place build, like build_ext
# --inplace; the generated files are git-ignored).
#
# It first builds the stand-ins of the robot's interface packages the stack
# talks to (interfaces/: franka_msgs, control_msgs and controller_manager_msgs:
# the gripper's actions, the robot state, the error recovery and the controller
# switch after it; none exists as a wheel) and installs them as ordinary
# interface packages into PREFIX (default: the venv).
#
# Usage: scripts/build_msgs.sh [VENV [PREFIX]]   (default: .venv, and PREFIX = VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$(cd "${1:-.venv}" && pwd)
PREFIX=${2:-$VENV}
PY=$VENV/bin/python3
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# Some wheels export cmake targets with include paths of the machine that built
# them; point those at this interpreter's headers and this venv's numpy.
PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$PY" -c "import numpy; print(numpy.get_include())")
grep -rlE "/opt/python/cp311-cp311/(include/python3.11|lib/python3.11/site-packages/numpy/_core/include)" \
    "$VENV/share" --include='*.cmake' 2>/dev/null | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" "$f"
done || true

mkdir -p "$ROOT/build"
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH

# The robot's interface packages. Their Python extensions find the package's
# own libraries through the RPATH ($ORIGIN/../../.. is PREFIX/lib from
# PREFIX/lib/python3.11/site-packages/<pkg>), the ROS libraries through
# LD_LIBRARY_PATH as every other wheel does.
for pkg in franka_msgs control_msgs controller_manager_msgs; do
  log=$ROOT/build/$pkg
  cmake -S "$ROOT/interfaces/$pkg" -B "$ROOT/build/interfaces/$pkg" -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release \
    '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..' >"$log.configure.log" 2>&1 \
    || { tail -30 "$log.configure.log"; echo "build_msgs: cmake configure of $pkg failed (log: build/$pkg.configure.log)" >&2; exit 1; }
  cmake --build "$ROOT/build/interfaces/$pkg" -j"$(nproc)" >"$log.build.log" 2>&1 \
    || { tail -30 "$log.build.log"; echo "build_msgs: compile of $pkg failed (log: build/$pkg.build.log)" >&2; exit 1; }
  cmake --install "$ROOT/build/interfaces/$pkg" >"$log.install.log" 2>&1 \
    || { tail -30 "$log.install.log"; echo "build_msgs: install of $pkg failed" >&2; exit 1; }
done
[ "${MECHANIC_INTERFACES_STANDINS_ONLY:-0}" = 1 ] && { echo "build_msgs: franka_msgs, control_msgs, controller_manager_msgs installed in $PREFIX"; exit 0; }
cmake -S "$ROOT" -B "$ROOT/build/msgs" -DMECHANIC_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release >"$ROOT/build/msgs.configure.log" 2>&1 \
  || { tail -30 "$ROOT/build/msgs.configure.log"; echo "build_msgs: cmake configure failed (log: build/msgs.configure.log)" >&2; exit 1; }
cmake --build "$ROOT/build/msgs" -j"$(nproc)" >"$ROOT/build/msgs.build.log" 2>&1 \
  || { tail -30 "$ROOT/build/msgs.build.log"; echo "build_msgs: compile failed (log: build/msgs.build.log)" >&2; exit 1; }
cmake --install "$ROOT/build/msgs" >"$ROOT/build/msgs.install.log" 2>&1 \
  || { tail -30 "$ROOT/build/msgs.install.log"; echo "build_msgs: install failed" >&2; exit 1; }

# Move the generated Python package into the source tree; the venv keeps the
# shared libraries (lib/) and the ament index entries (share/).
GEN=$SITE/mechanic_rl_ros
rm -rf "$ROOT/mechanic_rl_ros/msg" "$ROOT/mechanic_rl_ros/srv" "$ROOT"/mechanic_rl_ros/*.so
cp -r "$GEN/msg" "$GEN/srv" "$ROOT/mechanic_rl_ros/"
cp "$GEN"/*.so "$ROOT/mechanic_rl_ros/"
rm -rf "$GEN" "$SITE"/mechanic_rl_ros-*.egg-info
echo "build_msgs: interfaces built and installed (libraries in $VENV/lib, Python modules in mechanic_rl_ros/msg, mechanic_rl_ros/srv)"
