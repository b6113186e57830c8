#!/usr/bin/env bash
# How much do cd-infer's windows change a trained model's OSCD map? Maps the 10 test cities
# with one window covering the whole city, with cd-infer's default (automatic) windows and
# with windows of the bundle's tile size at several overlaps, then reports for each plan the
# pooled F1 (cd-eval) and how many mask pixels differ from the whole-city map. Data for
# choosing --tile-size and --overlap.
#
#   usage: benchmarks/oscd_windows.sh RUN BANDSET [TILE]
#     RUN      a benchmarks/bench_oscd_train.sh run folder (holds model.cdm)
#     BANDSET  rgb | all | no60m, as the bundle was trained
#     TILE     window of the windowed plans (default 96, the OSCD benchmarks' tile size)
#   CDK_OVERLAPS="0 16 24 32 48" sets the overlaps tried. Maps already in RUN/windows are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
RUN=${1:?usage: oscd_windows.sh RUN BANDSET [TILE]}
BANDS=$(oscd_bands "${2:?usage: oscd_windows.sh RUN BANDSET [TILE]}")
TILE=${3:-96}
OUT=$RUN/windows

plans=("whole 4096 0")  # OSCD cities are at most 1200 px wide: one window each
plans+=("auto 0 -1")     # cd-infer's default plan: windows chosen per city (docs/cd-infer.md)
for ov in ${CDK_OVERLAPS:-0 16 24 32 48}; do plans+=("t$TILE-o$ov $TILE $ov"); done
for plan in "${plans[@]}"; do  # maps already there are kept (oscd_map_test), so reruns resume
  read -r tag tile ov <<< "$plan"
  mkdir -p "$OUT/$tag"
  oscd_map_test "$OUT/$tag" "$BANDS" --model "$RUN/model.cdm" --tile-size "$tile" --overlap "$ov" --batch-size 1
done

/usr/bin/python3 - "$OUT" "$OSCD" "$TILE" "${plans[@]}" <<'PY'
import json, os, sys
import numpy as np
from osgeo import gdal
out, oscd, tile, plans = sys.argv[1], sys.argv[2], sys.argv[3], [p.split() for p in sys.argv[4:]]
cities = open(f"{oscd}/test.txt").read().strip().split(",")
read = lambda p: gdal.Open(p).ReadAsArray()
whole = {c: read(f"{out}/whole/{c}.tif") for c in cities}
print(f"{os.path.basename(os.path.dirname(out))}: the 10 OSCD test cities, windows of {tile} px at each overlap "
      "against one window per city, batch 1\n")
print("| plan | pooled F1 | precision | recall | mask pixels differing from the whole-city map |")
print("|---|---:|---:|---:|---:|")
for tag, t, ov in plans:
    c = json.load(open(f"{out}/{tag}/eval.json"))["pooled"]["change"]
    diff = valid = 0
    for city in cities:
        m, ref = read(f"{out}/{tag}/{city}.tif"), whole[city]
        diff += int(((m != ref) & (ref != 255)).sum())
        valid += int((ref != 255).sum())
    name = {"whole": "one window per city", "auto": "cd-infer's default (automatic) windows"}.get(tag, f"{t} px, overlap {ov}")
    print(f"| {name} | {c['f1']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} | {100 * diff / valid:.2f} % |")
sys.stdout.flush()
os._exit(0)  # skip GDAL's teardown
PY
