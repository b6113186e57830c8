#!/usr/bin/env bash
# Configure and build cdkit into ./build (Release with debug info), after installing
# the Debian packages it needs. Usage: scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
BUILD_DIR="${CDK_BUILD_DIR:-build}"
# A full build takes about 2.2 GiB (0.7 GiB of it the precompiled LibTorch header) plus
# ccache's copies: say so up front rather than fail half-way with "No space left on device".
free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ -n "$free_kib" ] && [ "$free_kib" -lt $((4 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kib / 1024)) MiB free on $(df -P . | awk 'NR == 2 {print $6}'); a full build needs about 3 GiB (build tree and ccache)" >&2
fi
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >&2
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" >&2
