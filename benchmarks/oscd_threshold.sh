#!/usr/bin/env bash
# The validation-chosen threshold of an OSCD run of bench_oscd_train.sh, for bundles trained
# before cd-train-teacher recorded one as well: map the validation tiles (training cities
# only) with cd-infer --prob, pick the threshold of 0.05, 0.10 … 0.95 with the best pooled
# change F1 there (cd-train-teacher's grid), then map and score the 10 test cities with it.
# The test cities are not looked at before the threshold is fixed.
#
#   usage: benchmarks/oscd_threshold.sh RUN DATA BANDSET [-- CD-INFER-OPTIONS]
#     RUN      a bench_oscd_train.sh run folder (holds model.cdm)
#     DATA     its tile folder (holds parts/val.csv), e.g. $CDK_BENCH_DIR/all-t96-o32, or
#              the partition folder it validated on (holds val.csv), e.g. DATA/parts-mumbai-rennes
#     BANDSET  rgb | all
#     CD-INFER-OPTIONS  used for the validation tiles and the test cities alike, e.g. --tta
# Maps go in RUN/val-probs and RUN/threshold-T (RUN/val-probs-tta and RUN/threshold-T-tta
# with --tta: the options, dashes and spaces dropped, name the folders).
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
RUN=$1 DATA=$2 BANDSET=$3
shift 3
[ "${1:-}" = "--" ] && shift
TAG=$(echo "$*" | tr -d ' -')
BANDS=$(oscd_bands "$BANDSET")
VAL=$RUN/val-probs${TAG:+-$TAG}
MANIFEST=$DATA/parts/val.csv
[ -f "$DATA/val.csv" ] && MANIFEST=$DATA/val.csv
mkdir -p "$VAL"

/usr/bin/python3 - "$MANIFEST" > "$VAL/pairs.csv" <<'PY'
import csv, os, sys
base = os.path.dirname(os.path.abspath(sys.argv[1]))
print("scene,pre,post")
for r in csv.DictReader(open(sys.argv[1])):
    print(f"{r['id']},{os.path.join(base, r['a'])},{os.path.join(base, r['b'])}")
PY
"$BIN/cd-infer" -q --model "$RUN/model.cdm" --pairs "$VAL/pairs.csv" --out "$VAL" --with-prob --resume "$@" > /dev/null

T=$(/usr/bin/python3 - "$MANIFEST" "$VAL" "$RUN/model.cdm" <<'PY'
import csv, json, os, struct, sys
import numpy as np
from osgeo import gdal
manifest, val, model = sys.argv[1:4]
base = os.path.dirname(os.path.abspath(manifest))
grid = [round(0.05 * i, 2) for i in range(1, 20)]
tp, fp, fn = np.zeros(len(grid)), np.zeros(len(grid)), np.zeros(len(grid))
for r in csv.DictReader(open(manifest)):
    p = gdal.Open(f"{val}/{r['id']}_prob.tif").ReadAsArray()
    y = gdal.Open(os.path.join(base, r['label'])).ReadAsArray()
    ok = (y != 255) & (p >= 0)
    for i, t in enumerate(grid):
        pred = p >= np.float32(t)
        tp[i] += (pred & (y == 1) & ok).sum()
        fp[i] += (pred & (y == 0) & ok).sum()
        fn[i] += (~pred & (y == 1) & ok).sum()
f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
best = int(np.argmax(f1))  # the lowest on ties
raw = open(model, 'rb').read()
header = json.loads(raw[16:16 + struct.unpack('<Q', raw[8:16])[0]])
recorded = (header.get('metrics') or {}).get('best_threshold')
print(f"validation tiles: F1 {f1[grid.index(0.5)]:.3f} at 0.5, {f1[best]:.3f} at {grid[best]}"
      f" (the bundle records {recorded['threshold'] if recorded else 'none'})", file=sys.stderr)
print(grid[best])
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)  # GDAL's Python bindings can crash at interpreter exit
PY
)
OUT=$RUN/threshold-$T${TAG:+-$TAG}
mkdir -p "$OUT"
oscd_map_test "$OUT" "$BANDS" --model "$RUN/model.cdm" --threshold "$T" "$@"
echo "test cities, threshold $T chosen on the validation tiles${*:+ (cd-infer $*)}:"
oscd_city_table "$OUT/eval.json"
