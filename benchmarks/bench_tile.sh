#!/usr/bin/env bash
# cd-tile against a loop of gdal_translate -srcwin calls cutting the same tiles (A, B and
# label of every window cd-tile wrote), side by side on one synthetic pair.
#   usage: benchmarks/bench_tile.sh [SIZE=8192] [TILE=256]    (after scripts/build.sh)
# Prints one Markdown table of tiles/s, seconds and peak RSS for each, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-8192}
TILE=${2:-256}
BIN=$PWD/build/apps
WORK=${CDK_BENCH_DIR:-/tmp/cdk-bench-tile}
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

echo "generating a ${SIZE}x${SIZE} 4-band UInt16 synthetic pair ..." >&2
"$BIN/cd-synth" --out scene --width "$SIZE" --height "$SIZE" --bands 4 --type UInt16 --seed 1 -q >/dev/null
scene_mib=$(( $(stat -c %s scene/pre.tif) / 1048576 ))

run_cdtile() {  # $1 threads
  rm -rf "tiles$1"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "%e %M" -o "cdtile$1.time" "$BIN/cd-tile" --pre scene/pre.tif --post scene/post.tif \
      --label scene/label.tif --out "tiles$1" --tile-size "$TILE" --threads "$1" -q > "cdtile$1.json"
}
echo "cd-tile, 1 thread ..." >&2; run_cdtile 1
echo "cd-tile, 2 threads ..." >&2; run_cdtile 2

tiles=$(tail -n +2 tiles1/tiles.csv | wc -l)
tail -n +2 tiles1/tiles.csv | cut -d, -f1,3,4,5,6 > windows.txt
mkdir -p gt/A gt/B gt/label
echo "gdal_translate loop over the same $tiles windows ($((3 * tiles)) calls) ..." >&2
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
/usr/bin/time -f "%e %M" -o gt.time bash -c '
  while IFS=, read -r id x y w h; do
    gdal_translate -q -srcwin "$x" "$y" "$w" "$h" scene/pre.tif "gt/A/$id.tif"
    gdal_translate -q -srcwin "$x" "$y" "$w" "$h" scene/post.tif "gt/B/$id.tif"
    gdal_translate -q -srcwin "$x" "$y" "$w" "$h" scene/label.tif "gt/label/$id.tif"
  done < windows.txt'

# A tougher baseline than the loop: the same gdal_translate work in one Python process
# (no process start-up per tile), through GDAL's Python bindings.
echo "gdal.Translate in one Python process over the same windows ..." >&2
mkdir -p py/A py/B py/label
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
/usr/bin/time -f "%e %M" -o py.time /usr/bin/python3 - <<'PY'
from osgeo import gdal
gdal.UseExceptions()
src = {d: gdal.Open(f"scene/{f}.tif") for d, f in (("A", "pre"), ("B", "post"), ("label", "label"))}
for line in open("windows.txt"):
    tid, x, y, w, h = line.strip().split(",")
    for d, ds in src.items():
        gdal.Translate(f"py/{d}/{tid}.tif", ds, srcWin=[int(x), int(y), int(w), int(h)])
PY

read -r t1 m1 < cdtile1.time
read -r t2 m2 < cdtile2.time
read -r tg mg < gt.time
read -r tp mp < py.time
awk -v n="$tiles" -v t1="$t1" -v m1="$m1" -v t2="$t2" -v m2="$m2" -v tg="$tg" -v mg="$mg" -v tp="$tp" -v mp="$mp" \
    -v size="$SIZE" -v tile="$TILE" -v mib="$scene_mib" 'BEGIN {
  printf "Scene %dx%d, 4 bands UInt16 (%d MiB per date), %d tiles of %d px (A, B, label each)\n\n", size, size, mib, n, tile
  printf "| tool | seconds | tiles/s | peak RSS (MiB) | vs gdal_translate loop |\n|---|---|---|---|---|\n"
  printf "| cd-tile --threads 1 | %.2f | %.1f | %.0f | %.1fx |\n", t1, n / t1, m1 / 1024, tg / t1
  printf "| cd-tile --threads 2 | %.2f | %.1f | %.0f | %.1fx |\n", t2, n / t2, m2 / 1024, tg / t2
  printf "| gdal_translate -srcwin loop | %.2f | %.1f | %.0f (largest call) | 1.0x |\n", tg, n / tg, mg / 1024
  printf "| gdal.Translate, one Python process | %.2f | %.1f | %.0f | %.1fx |\n", tp, n / tp, mp / 1024, tg / tp
}'
