#!/usr/bin/env bash
# Unsupervised baseline on the OSCD test cities: cd-cva (change-vector analysis, Otsu
# threshold) on 4 bands (B02 B03 B04 B08, 10 m) of every test city, then cd-eval pooled and
# per city against the reference masks. Needs ../shared/data/oscd.
#   usage: benchmarks/bench_oscd_cva.sh [BANDS=B02,B03,B04,B08]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
BANDS=${1:-B02,B03,B04,B08}
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
WORK=${CDK_BENCH_DIR:-/tmp/cdk-bench-oscd-cva}
rm -rf "$WORK"; mkdir -p "$WORK"
band_list() {  # $1 = folder: the band files in the order of $BANDS, joined by ';'
  local out="" b f
  for b in ${BANDS//,/ }; do
    f=$(ls "$1"/*_"$b".tif)
    out="${out:+$out;}$f"
  done
  echo "$out"
}
echo "scene,pred,ref" > "$WORK/eval.csv"
start=$(date +%s.%N)
for city in $(tr ',' ' ' < "$OSCD/test.txt"); do
  "$BIN/cd-cva" -q --pre "$(band_list "$OSCD/$city/imgs_1")" --post "$(band_list "$OSCD/$city/imgs_2")" \
      --out "$WORK/$city.tif" > "$WORK/$city.json"
  echo "$city,$city.tif,$OSCD/$city/cm.tif" >> "$WORK/eval.csv"
done
end=$(date +%s.%N)
"$BIN/cd-eval" -q --pairs "$WORK/eval.csv" > "$WORK/eval.json"
echo "cd-cva on the 10 OSCD test cities, bands $BANDS, $(awk "BEGIN { printf \"%.1f\", $end - $start }") s for all cities"
echo
oscd_city_table "$WORK/eval.json"
