#!/usr/bin/env bash
# The main job, end to end, on the embedded default: install what is needed, build, then
#   cd-synth      generate a georeferenced synthetic scene pair with known changes
#   cd-tile       cut it into tiles with CAR, tiles.csv and dataset.json
#   cd-partition  Origin-Partition split by CAR (+ validation split)
#   cd-cva        a change map from change-vector analysis (the classical baseline)
#   cd-train-teacher  train a small FC-Siam-diff on the origin set, validating every epoch
#   cd-infer      map the whole scene with it (georeferenced, colour table, QGIS style)
#   cd-eval       score both change maps against the known changes
#   mtkd_recipe   the O-P/MTKD recipe on held-out synthetic scenes: origin, teachers per CAR
#                 partition, distilled student; origin vs O-P two-pass vs student in one table
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
echo "== cd-train-teacher: fc-siam-diff, width 8, 12 epochs on the origin set" >&2
"$BIN/cd-train-teacher" --train "$OUT/parts/origin.csv" --val "$OUT/parts/val.csv" --arch fc-siam-diff \
    --width 8 --epochs 12 --batch-size 8 --lr 2e-3 --class-weights 1,3 --seed 0 --out "$OUT/model.cdm" \
    > "$OUT/train.json"
echo "== cd-infer: the trained model over the whole scene" >&2
"$BIN/cd-infer" --model "$OUT/model.cdm" --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" \
    --out "$OUT/change.tif" --prob "$OUT/change_prob.tif" --polygons "$OUT/change.gpkg" > "$OUT/infer.json"
echo "== cd-eval: both change maps against the known changes" >&2
"$BIN/cd-eval" --pred "$OUT/cva_change.tif" --ref "$OUT/scene/label.tif" > "$OUT/eval.json"
"$BIN/cd-eval" --pred "$OUT/change.tif" --ref "$OUT/scene/label.tif" > "$OUT/eval_model.json"

/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/tile.json"))
p = json.load(open(f"{out}/partition.json"))
tr = json.load(open(f"{out}/train.json"))
inf = json.load(open(f"{out}/infer.json"))
print(f"tiles: {t['tiles']} in {out}/tiles (manifest {out}/tiles/tiles.csv)")
parts = p.get("partitions", [])
print("partitions: " + ", ".join(f"{q['name']} {q.get('train', '?')}+{q.get('val', '?')}" for q in parts))
print(f"model: {tr['arch']} width {tr['width']}, {tr['parameters']} parameters, {tr['epochs_completed']} epochs "
      f"in {tr['training_seconds']:.0f} s ({tr['samples_per_s']:.0f} samples/s), best epoch {tr['best_epoch']} "
      f"-> {out}/model.cdm")
print(f"inference: {inf['windows']} windows of {inf['window']} px in {inf['seconds']:.1f} s "
      f"({inf['megapixels_per_s']:.2f} Mpx/s), changed area {inf['changed_area_m2'] / 1e4:.1f} ha")
print("\nagainst the known changes (change class):")
for name, f in (("CVA baseline (cd-cva)", "eval.json"), ("model (trained on it)", "eval_model.json")):
    e = json.load(open(f"{out}/{f}"))["pooled"]
    c = e["change"]
    print(f"  {name:26s} F1 {c['f1']:.3f}  IoU {c['iou']:.3f}  precision {c['precision']:.3f}  "
          f"recall {c['recall']:.3f}  |  OA {e['oa']:.3f}  kappa {e['kappa']:.3f}  mIoU {e['miou']:.3f}")
print(f"\nchange maps: {out}/change.tif and {out}/cva_change.tif, polygons: {out}/change.gpkg "
      f"({inf['polygons']['regions']} regions) - open them in QGIS")
PY

echo "== mtkd_recipe: Origin-Partition teachers distilled into a student, on held-out synthetic scenes" >&2
echo
bash scripts/mtkd_recipe.sh --out "$OUT/mtkd"
