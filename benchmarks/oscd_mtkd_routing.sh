#!/usr/bin/env bash
# What MTKD's routing asks of the student, measured on OSCD's training tiles: for the runs of
# benchmarks/bench_oscd_mtkd.sh (3-quantile scheme), the origin, each routed teacher (the
# teacher of the tile's ground-truth CAR partition: the student's KD target), the student and
# the no-KD control map the 14 training cities; per partition, their predicted change
# fraction, recall and precision on the training tiles against the ground truth.
#
#   usage: benchmarks/oscd_mtkd_routing.sh ARCH [SEEDS=0,1,2] [STUDENT=student_quantiles-kd0.1]
#   environment: CDK_BANDSET (rgb), CDK_WIDTH (16), CDK_EPOCHS (10: the origin's, which names
#     the run folders), CDK_BENCH_DIR (/tmp/cdk-bench-oscd-train)
# The maps are whole-scene cd-infer outputs (blended windows), cropped to the tiles; in
# training the teacher sees the augmented crop alone, so its target there differs slightly.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
ARCH=${1:-fc-siam-diff}
SEEDS=${2:-0,1,2}
STUDENT=${3:-student_quantiles-kd0.1}
BANDSET=${CDK_BANDSET:-rgb}
BANDS=$(oscd_bands "$BANDSET")
ROOT=${CDK_BENCH_DIR:-/tmp/cdk-bench-oscd-train}
DATA=$ROOT/$BANDSET-t96-o32
NAMES=$(oscd_partition_names "$DATA/parts_quantiles")
PREFIX=$(oscd_mtkd_prefix "$ROOT" "$ARCH" "${CDK_WIDTH:-16}" "$BANDSET" "${CDK_EPOCHS:-10}")
for seed in ${SEEDS//,/ }; do
  RUN=$PREFIX$seed
  for model in origin control $STUDENT $(printf 'teacher_quantiles_%s ' $NAMES); do
    [ -f "$RUN/$model.cdm" ] || { echo "$RUN/$model.cdm is missing: run bench_oscd_mtkd.sh first" >&2; exit 1; }
    mkdir -p "$RUN/train_$model"
    "$BIN/cd-infer" -q --model "$RUN/$model.cdm" --pairs "$DATA/train_pairs.csv" --band-pattern "$BANDS" \
        --out "$RUN/train_$model" --threshold 0.5 --resume > /dev/null
  done
done
/usr/bin/python3 - "$DATA/parts_quantiles" "$PREFIX" "$SEEDS" "$STUDENT" "$NAMES" <<'PY'
import csv, os, sys
import numpy as np
from osgeo import gdal
gdal.UseExceptions()
parts, prefix, seeds, student, names = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4], sys.argv[5].split()
models = [("origin", "origin"), ("routed teacher", None), (f"MTKD student ({student})", student),
          ("no-KD control", "control")]
# counts[model][partition] = [true positives, predicted change, reference change, valid pixels]
counts = {m: {p: np.zeros(4) for p in names} for m, _ in models}
maps = {}  # (seed, model folder, scene) -> that model's map of the training city


def read(seed, folder, scene):
    if (seed, folder, scene) not in maps:
        maps[(seed, folder, scene)] = gdal.Open(f"{prefix}{seed}/{folder}/{scene}.tif").ReadAsArray()
    return maps[(seed, folder, scene)]


for p in names:
    with open(f"{parts}/{p}.csv") as f:
        for t in csv.DictReader(f):
            ref = gdal.Open(os.path.normpath(os.path.join(parts, t["label"]))).ReadAsArray()
            x, y, w, h = (int(t[k]) for k in ("x", "y", "width", "height"))
            valid = ref != 255
            for seed in seeds:
                for m, key in models:
                    pred = read(seed, f"train_{key or 'teacher_quantiles_' + p}", t["scene"])[y:y + h, x:x + w]
                    v = valid & (pred != 255)
                    c = (pred == 1) & v
                    r = (ref == 1) & v
                    counts[m][p] += [np.sum(c & r), np.sum(c), np.sum(r), np.sum(v)]
print(f"Training tiles of the 3-quantile scheme, pooled over seeds {','.join(seeds)}: "
      "predicted change in % of valid pixels, recall and precision against the reference (its own change % in the last row).\n")
head = " | ".join(f"{p}: change % / recall / precision" for p in names)
print(f"| model | {head} | all: change % / recall / precision |\n" + "|---" * (len(names) + 2) + "|")
groups = [[p] for p in names] + [names]
for m, _ in models:
    cells = []
    for group in groups:
        tp, pc, rc, n = sum(counts[m][p] for p in group)
        cells.append(f"{100 * pc / n:.2f} / {tp / max(rc, 1):.3f} / {tp / max(pc, 1):.3f}")
    print(f"| {m} | " + " | ".join(cells) + " |")
# The reference's change share, over the pixels valid in both (the same for every model).
ref = [sum(counts["origin"][p] for p in group) for group in groups]
print("| reference | " + " | ".join(f"{100 * c[2] / c[3]:.2f} / 1 / 1" for c in ref) + " |")
sys.stdout.flush()
os._exit(0)  # GDAL's Python bindings may crash at interpreter exit
PY
