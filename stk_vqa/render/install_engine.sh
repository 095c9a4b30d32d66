#!/usr/bin/env bash
# Install the render engine of `stk-vqa render` (what `make render-deps` runs):
#   1. Debian packages: the game data (supertuxkart-data 1.4), Mesa's software OpenGL, a C++ tool chain;
#   2. pysupertuxkart 1.1.2 (module `pystk`) built from its PyPI sdist with two fixes (cmake < 4 accepts its
#      `cmake_minimum_required(3.0)`; the bundled pybind11 2.7.1 fails on Python 3.11, so a current pybind11 is
#      used instead); the built wheel is cached, so the ~6-minute build is paid once per machine;
#   3. the label-aware shader overlay, generated from the installed game data (python -m stk_vqa.render.shaders).
# Usage: stk_vqa/render/install_engine.sh [PYTHON]   (PYTHON: the venv's python; default .venv/bin/python)
# Cache: $STK_VQA_CACHE (default ~/.cache/stk-vqa): wheels/ (the built wheel), build/ (sdist tree), shaders/.
set -euo pipefail

PYTHON=${1:-${PYTHON:-.venv/bin/python}}
[ -x "$PYTHON" ] || { echo "render-deps: no python at $PYTHON (run make install first)"; exit 1; }
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"  # absolute: the build runs elsewhere
CACHE=${STK_VQA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stk-vqa}
VERSION=1.1.2
start=$(date +%s)
say() { echo "render-deps: $*"; }

# 1. system packages (skipped when already there)
APT_PACKAGES="supertuxkart-data libgl1 libgl-dev libegl1 libegl-mesa0 libgl1-mesa-dri build-essential"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    say "apt-get install$missing"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

# 2. pysupertuxkart 1.1.2: reuse a built wheel when present, else build it from the sdist
if "$PYTHON" -c "import importlib.metadata as m, sys; sys.exit(m.version('PySuperTuxKart') != '$VERSION')" 2>/dev/null; then
    say "PySuperTuxKart $VERSION already installed"
else
    mkdir -p "$CACHE/wheels" "$CACHE/build"
    PYTAG=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')  # the wheel is per Python version
    find_wheel() { find "$CACHE/wheels" -maxdepth 1 -iname "pysupertuxkart-$VERSION-$PYTAG-*.whl" | head -n1; }
    wheel=$(find_wheel)
    if [ -z "$wheel" ]; then
        say "building PySuperTuxKart $VERSION from its sdist (about 6 minutes on 2 cores)"
        "$PYTHON" -m pip install -q "cmake>=3.12,<4" ninja "pybind11>=2.11" "setuptools>=42" wheel
        (
        cd "$CACHE/build"
        [ -f PySuperTuxKart-$VERSION.tar.gz ] || "$PYTHON" -m pip download -q --no-deps --no-binary pysupertuxkart \
            --no-build-isolation "pysupertuxkart==$VERSION" -d .
        rm -rf PySuperTuxKart-$VERSION && tar xzf PySuperTuxKart-$VERSION.tar.gz
        cd PySuperTuxKart-$VERSION
        # the bundled pybind11 (2.7.1) does not build for Python 3.11: use the installed one
        sed -i 's|^add_subdirectory("${PROJECT_SOURCE_DIR}/lib/pybind11")|find_package(pybind11 CONFIG REQUIRED)|' CMakeLists.txt
        sed -i 's|^include_directories("${PYBIND11_INCLUDE_DIR}")|include_directories(${pybind11_INCLUDE_DIRS})|' CMakeLists.txt
        grep -q 'find_package(pybind11 CONFIG REQUIRED)' CMakeLists.txt || { say "sdist layout changed: pybind11 patch failed"; exit 1; }
        VENV_BIN=$(dirname "$PYTHON")
        PATH="$VENV_BIN:$PATH" CMAKE_PREFIX_PATH="$("$PYTHON" -m pybind11 --cmakedir)" \
            CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
            "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation . -w "$CACHE/wheels"
        )
        wheel=$(find_wheel)
        [ -n "$wheel" ] || { say "the build made no wheel in $CACHE/wheels"; exit 1; }
        rm -rf "$CACHE/build/PySuperTuxKart-$VERSION"
        say "built $wheel in $(( $(date +%s) - start )) s"
    else
        say "reusing $wheel"
    fi
    # --no-deps: it names PySuperTuxKartData, whose download URL is gone; the Debian data replaces it
    "$PYTHON" -m pip install -q --no-deps --force-reinstall "$wheel"
fi

# 3. the label-aware shaders, generated from the installed game data (by the stk_vqa next to this script)
PACKAGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHONPATH="$PACKAGE_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m stk_vqa.render.shaders
say "done in $(( $(date +%s) - start )) s"
