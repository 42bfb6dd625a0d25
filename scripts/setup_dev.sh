#!/usr/bin/env bash
# Set up a development/test environment on a fresh Debian machine:
# system libraries for Qt under Xvfb, a venv with the CPU build of torch,
# and napari-unet-toolkit installed editable with its testing extras (Python 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="python3-venv xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0
  libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0
  libxcb-xfixes0 libxcb-xkb1 libdbus-1-3 libfontconfig1 fonts-dejavu-core"

if command -v apt-get >/dev/null 2>&1 && ! command -v Xvfb >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $SYSTEM_PACKAGES >/dev/null
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "napari-unet-toolkit needs Python 3.11 or newer: $("$PYTHON" --version); set PYTHON=python3.11 (or newer)" >&2
  exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# 'napari-unet' (this project's former name, or the unrelated PyPI project) installs the same import package
.venv/bin/python -m pip uninstall -y -q napari-unet 2>/dev/null || true
# Pin the CPU build of torch on the same command line: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[testing,lint]"
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
