#!/usr/bin/env bash
# Install cdkit's build and test dependencies from Debian 12 packages.
# Safe to re-run: packages already present are not reinstalled, and when
# everything is there this script touches nothing (no apt-get update either).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgdal-dev gdal-bin libproj-dev proj-bin
  libopencv-core-dev libopencv-imgproc-dev
  libtorch-dev libopenblas0-openmp libdnnl-dev
  libcli11-dev catch2 nlohmann-json3-dev zlib1g-dev
  python3 python3-gdal python3-numpy
  help2man
)
# Optional clients used by the tests that talk to real tools; tests skip without them.
OPTIONAL=(python3-torch python3-qgis python3-yaml parallel slurm-wlm munge)

missing=()
for p in "${PACKAGES[@]}" "${OPTIONAL[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all dependencies present" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: missing packages (${missing[*]}) and not root; install them with apt-get" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
