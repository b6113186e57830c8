#!/usr/bin/env bash
# The main job, end to end, on the embedded default: install what is needed, build, then
#   cd-synth      generate a georeferenced synthetic scene pair with known changes
#   cd-tile       cut it into tiles with CAR, tiles.csv and dataset.json
#   cd-partition  Origin-Partition split by CAR (+ validation split)
#   cd-cva        a change map from change-vector analysis (the classical baseline)
#   cd-eval       score that change map against the known changes
# Usage: scripts/demo.sh [OUT_DIR=demo-out]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BIN=build/apps
OUT=${1:-demo-out}
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== cd-synth: 1024x1024, 4 bands, UInt16, seed 7" >&2
"$BIN/cd-synth" --out "$OUT/scene" --width 1024 --height 1024 --bands 4 --type UInt16 --seed 7 > "$OUT/synth.json"
echo "== cd-tile: 128 px tiles, 32 px overlap" >&2
"$BIN/cd-tile" --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" --label "$OUT/scene/label.tif" \
    --scene-name synthetic --tile-size 128 --overlap 32 --out "$OUT/tiles" > "$OUT/tile.json"
echo "== cd-partition: paper thresholds 0.05, 0.2; 10 % validation" >&2
"$BIN/cd-partition" "$OUT/tiles/tiles.csv" --out "$OUT/parts" --thresholds 0.05,0.2 --val-fraction 0.1 \
    --seed 0 > "$OUT/partition.json"
echo "== cd-cva: change-vector analysis baseline" >&2
"$BIN/cd-cva" --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" --out "$OUT/cva_change.tif" > "$OUT/cva.json"
echo "== cd-eval: the baseline against the known changes" >&2
"$BIN/cd-eval" --pred "$OUT/cva_change.tif" --ref "$OUT/scene/label.tif" > "$OUT/eval.json"

/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/tile.json"))
p = json.load(open(f"{out}/partition.json"))
e = json.load(open(f"{out}/eval.json"))["pooled"]
print(f"tiles: {t['tiles']} in {out}/tiles (manifest {out}/tiles/tiles.csv)")
parts = p.get("partitions", [])
print("partitions: " + ", ".join(f"{q['name']} {q.get('train', '?')}+{q.get('val', '?')}" for q in parts))
c = e["change"]
print(f"CVA baseline vs truth (change class): F1 {c['f1']:.3f}  IoU {c['iou']:.3f}  precision {c['precision']:.3f}  "
      f"recall {c['recall']:.3f}  |  OA {e['oa']:.3f}  kappa {e['kappa']:.3f}  mIoU {e['miou']:.3f}")
print(f"change map: {out}/cva_change.tif (open it in QGIS)")
PY
