#!/usr/bin/env bash
# The installed toolkit: `cmake --install` into a prefix and the Debian package (CPack,
# unpacked with dpkg-deb into a root folder, as dpkg would lay it out) both give programs
# that run from where they were installed, with their man pages.
# Usage: tests/install/test_install.sh BUILD_DIR [install|package]
set -euo pipefail
BUILD=$(cd "$1" && pwd)
WHAT=${2:-install}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

check_tree() {  # ROOT_PREFIX: bin/, share/man/man1/ of an installed toolkit
    local p=$1 n=0
    for tool in cd-synth cd-tile cd-partition cd-eval cd-cva cd-mosaic cd-degrade cd-train-teacher cd-infer cd-distill; do
        [ -x "$BUILD/apps/$tool" ] || continue
        [ -x "$p/bin/$tool" ] || fail "$p/bin/$tool was not installed"
        "$p/bin/$tool" --version | grep -q "^$tool (cdkit) " || fail "$p/bin/$tool --version: $("$p/bin/$tool" --version 2>&1)"
        if command -v help2man > /dev/null; then
            page=$(ls "$p/share/man/man1/$tool.1"* 2>/dev/null | head -1)
            [ -n "$page" ] || fail "no man page for $tool under $p/share/man/man1"
            case $page in
                *.gz) zcat "$page" ;;
                *) cat "$page" ;;
            esac | grep -q '^\.SH EXAMPLE\|^\.SH "EXAMPLE\|Example' || fail "man page $page has no example"
        fi
        n=$((n + 1))
    done
    [ "$n" -ge 7 ] || fail "only $n programs found in $BUILD/apps"
    # A program works from there: a tiny synthetic pair, mapped by change vector analysis.
    "$p/bin/cd-synth" -q --out "$TMP/scene" --width 96 --height 64 > /dev/null
    "$p/bin/cd-cva" -q --pre "$TMP/scene/pre.tif" --post "$TMP/scene/post.tif" --out "$TMP/cva.tif" > /dev/null
    [ -s "$TMP/cva.tif" ] || fail "installed cd-cva wrote no map"
    rm -rf "$TMP/scene" "$TMP/cva.tif"
    echo "ok: $n programs in $p run, with man pages" >&2
}

case $WHAT in
    install)
        cmake --install "$BUILD" --prefix "$TMP/prefix" --strip > /dev/null
        check_tree "$TMP/prefix"
        [ -f "$TMP/prefix/share/doc/cdkit/cd-infer.md" ] || fail "docs not installed"
        ;;
    package)
        command -v cpack > /dev/null || { echo "skipped: no cpack" >&2; exit 0; }
        command -v dpkg-deb > /dev/null || { echo "skipped: no dpkg-deb" >&2; exit 0; }
        (cd "$BUILD" && cpack -G DEB -B "$TMP/pkg" > "$TMP/cpack.log" 2>&1) || { cat "$TMP/cpack.log" >&2; fail "cpack failed"; }
        deb=$(ls "$TMP"/pkg/cdkit_*.deb | head -1)
        [ -n "$deb" ] || fail "cpack made no .deb"
        dpkg-deb --field "$deb" Package | grep -qx cdkit || fail "package name"
        deps=$(dpkg-deb --field "$deb" Depends)
        echo "$deps" | grep -q libgdal || fail "Depends lacks GDAL: $deps"
        dpkg-deb -x "$deb" "$TMP/root"
        check_tree "$TMP/root/usr"
        echo "ok: $(basename "$deb") ($(du -h "$deb" | cut -f1)), Depends: $deps" >&2
        ;;
    *) fail "unknown check $WHAT" ;;
esac
