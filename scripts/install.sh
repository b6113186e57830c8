#!/usr/bin/env bash
# Build cdkit and install its programs, man pages and docs into a prefix, so that
# `cd-infer` and the others are on PATH. Usage: scripts/install.sh [PREFIX]
#   scripts/install.sh               # /usr/local: /usr/local/bin/cd-infer, man cd-infer
#   scripts/install.sh "$HOME/.local" # no root needed; add $HOME/.local/bin to PATH
# The programs are stripped of their debug information on the way (about 10x smaller).
# For a Debian package instead: scripts/package.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${1:-/usr/local}"
bash scripts/build.sh
BUILD_DIR="${CDK_BUILD_DIR:-build}"
cmake --install "$BUILD_DIR" --prefix "$PREFIX" --strip >&2
echo "installed into $PREFIX: $PREFIX/bin/cd-infer --version prints $("$PREFIX/bin/cd-infer" --version)" >&2
case ":$PATH:" in
  *":$PREFIX/bin:"*) ;;
  *) echo "note: $PREFIX/bin is not on PATH; add it: export PATH=\"$PREFIX/bin:\$PATH\"" >&2 ;;
esac
