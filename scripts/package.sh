#!/usr/bin/env bash
# Build cdkit and make a Debian package of its programs, man pages and docs
# (CPack; dependencies from dpkg-shlibdeps). Usage: scripts/package.sh [OUT_DIR]
# Prints the package's path on stdout; install it with: apt-get install ./cdkit_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-.}"
bash scripts/build.sh
BUILD_DIR="${CDK_BUILD_DIR:-build}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
(cd "$BUILD_DIR" && cpack -G DEB -B "$OUT" >&2)
rm -rf "$OUT/_CPack_Packages"
ls -t "$OUT"/cdkit_*.deb | head -1
