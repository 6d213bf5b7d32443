#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian 12 machine, idempotently:
#   1. Debian packages (compiler, cmake, EGL/Mesa for offscreen MuJoCo rendering)
#   2. the Python virtual environment .venv
#   3. pinned Python packages (requirements.txt: ROS 2 Jazzy wheels, torch CPU, ...)
#   4. this package's ROS 2 messages (scripts/build_msgs.sh)
#   5. this package itself (editable pip install: mechanic-rl and the node executables)
# Each step is skipped when its inputs have not changed since it last succeeded
# (stamps in .setup-stamps/), so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMPS=$ROOT/.setup-stamps
PYTHON=${PYTHON:-python3}
mkdir -p "$STAMPS"

step=""
trap 'rc=$?; [ $rc -ne 0 ] && echo "setup: FAILED at step \"$step\" (exit $rc); see the messages above" >&2' EXIT
say() { echo "[setup] $*"; }
digest() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }

# ---------------------------------------------------------------- 1. apt
step="1/6 Debian packages"
APT_PKGS=(cmake g++ make libegl1 libegl-mesa0 libgl1-mesa-dri libgles2)
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || APT_PKGS+=(python3-venv)
[ -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || APT_PKGS+=(python3-dev)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  say "$step: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "$step: present"
fi

# ---------------------------------------------------------------- 2. venv
step="2/6 virtual environment"
if [ ! -x "$VENV/bin/python" ]; then
  say "$step: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
  rm -f "$STAMPS"/*
else
  say "$step: present"
fi

# ---------------------------------------------------------------- 3. pip
step="3/6 Python packages"
req=$(digest requirements.txt)
if ! fresh requirements "$req"; then
  say "$step: installing requirements.txt (first time: several minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | { grep -vE "^WARNING: Location '.*' is ignored" || true; }
  echo "$req" >"$STAMPS/requirements"
  rm -f "$STAMPS/msgs"
else
  say "$step: up to date"
fi

# ---------------------------------------------------------------- 4. messages
step="4/6 ROS 2 messages"
msgs=$(digest CMakeLists.txt package.xml msg/*.msg srv/*.srv scripts/build_msgs.sh interfaces/*/CMakeLists.txt \
  interfaces/*/package.xml interfaces/*/msg/*.msg interfaces/*/action/*.action interfaces/*/srv/*.srv)
if ! fresh msgs "$msgs" || [ ! -d mechanic_rl_ros/msg ] || ! ls "$VENV"/lib/libmechanic_rl_ros__rosidl_typesupport_c.so >/dev/null 2>&1 \
   || ! ls "$VENV"/lib/libfranka_msgs__rosidl_typesupport_c.so "$VENV"/lib/libcontrol_msgs__rosidl_typesupport_c.so "$VENV"/lib/libcontroller_manager_msgs__rosidl_typesupport_c.so >/dev/null 2>&1; then
  say "$step: building msg/ and srv/ with rosidl (about a minute)"
  scripts/build_msgs.sh "$VENV"
  echo "$msgs" >"$STAMPS/msgs"
else
  say "$step: up to date"
fi

# ---------------------------------------------------------------- 5. package
step="5/6 mechanic_rl_ros package"
pkg=$( (cat setup.py; ls mechanic_rl_ros/nodes) | sha256sum | cut -c1-16)
if ! fresh package "$pkg" || [ ! -x "$VENV/bin/mechanic-rl" ]; then
  say "$step: pip install -e ."
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
    | { grep -vE "^WARNING: Location '.*' is ignored" || true; }
  echo "$pkg" >"$STAMPS/package"
else
  say "$step: up to date"
fi

# ---------------------------------------------------------------- fused Mechanic kernels
step="6/6 Mechanic's fused CPU kernels"
KSRC=mechanic_rl_ros/optim/fused_kernels.c
KLIB=mechanic_rl_ros/optim/_fused_kernels.so
kern=$(digest "$KSRC")
if ! fresh kernels "$kern" || [ ! -f "$KLIB" ]; then
  say "$step: gcc $KSRC"
  gcc -O3 -fopenmp -fno-math-errno -fPIC -shared -pthread -o "$KLIB.tmp" "$KSRC"
  mv "$KLIB.tmp" "$KLIB"
  echo "$kern" >"$STAMPS/kernels"
else
  say "$step: up to date"
fi

"$VENV/bin/python" -c "import rclpy, torch, mujoco; from mechanic_rl_ros.msg import PolicyWeights
from mechanic_rl_ros.optim import fused; assert fused.available(), fused.unavailable_reason()" \
  || { step="final import check"; exit 1; }
step=""
say "done: activate with 'source .venv/bin/activate'"
