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
#   HiCD          the model as clean-pair teacher, a student for a date 2 at 4x coarser
#                 resolution (cd-distill --method hicd), the baseline fine-tuned on degraded
#                 pairs (cd-train-teacher --degrade), a held-out scene degraded by cd-degrade
#   kdmsi_recipe  KD-MSI from image-level bits only: CAM teacher + student, multiscale
#                 sigmoid inference, pseudo-masks, a second-stage FC-Siam-diff (OUT/kdmsi)
# Usage: scripts/demo.sh [OUT_DIR=demo-out]
# An existing OUT_DIR is refused before anything runs: an earlier run is never deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo-out}
if [ -e "$OUT" ]; then
    echo "demo.sh: $OUT exists (an earlier run?); give another folder (bash scripts/demo.sh OUT) or remove it" >&2
    exit 1
fi
bash scripts/build.sh
BIN=${CDK_BUILD_DIR:-build}/apps  # the build.sh and test.sh rule
mkdir -p "$OUT"

echo "== cd-synth: 1024x1024, 4 bands, UInt16, seed 7" >&2
"$BIN/cd-synth" --out "$OUT/scene" --width 1024 --height 1024 --bands 4 --type UInt16 --seed 7 > "$OUT/synth.json"
echo "== cd-tile: 128 px tiles, 32 px overlap" >&2
"$BIN/cd-tile" --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" --label "$OUT/scene/label.tif" \
    --scene-name synthetic --tile-size 128 --overlap 32 --out "$OUT/tiles" > "$OUT/tile.json"
echo "== cd-partition: paper thresholds 0.05, 0.2; validation from held-out 256 px blocks" >&2
"$BIN/cd-partition" "$OUT/tiles/tiles.csv" --out "$OUT/parts" --thresholds 0.05,0.2 --val-blocks 256 \
    --seed 0 > "$OUT/partition.json"
echo "== cd-cva: change-vector analysis baseline" >&2
"$BIN/cd-cva" --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" --out "$OUT/cva_change.tif" > "$OUT/cva.json"
echo "== cd-train-teacher: fc-siam-diff, width 8, 12 epochs on the origin set" >&2
"$BIN/cd-train-teacher" --train "$OUT/parts/origin.csv" --val "$OUT/parts/val.csv" --arch fc-siam-diff \
    --width 8 --epochs 12 --batch-size 8 --lr 2e-3 --class-weights 1,3 --seed 0 --out "$OUT/model.cdm" \
    > "$OUT/train.json"
echo "== cd-infer: the trained model over the whole scene" >&2
"$BIN/cd-infer" --model "$OUT/model.cdm" --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" \
    --out "$OUT/change.tif" --prob "$OUT/change_prob.tif" --polygons "$OUT/change.gpkg" \
    --quicklook "$OUT/change.png" > "$OUT/infer.json"
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
      f"({inf['megapixels_per_s']:.2f} Mpx/s), changed area {inf['changed_area_m2'] / 1e4:.1f} ha, "
      f"threshold {inf['threshold']:.2f} ({'chosen on the validation tiles' if inf['threshold_source'] == 'model' else inf['threshold_source']})")
print("\nagainst the known changes (change class):")
for name, f in (("CVA baseline (cd-cva)", "eval.json"), ("model (trained on it)", "eval_model.json")):
    e = json.load(open(f"{out}/{f}"))["pooled"]
    c = e["change"]
    print(f"  {name:26s} F1 {c['f1']:.3f}  IoU {c['iou']:.3f}  precision {c['precision']:.3f}  "
          f"recall {c['recall']:.3f}  |  OA {e['oa']:.3f}  kappa {e['kappa']:.3f}  mIoU {e['miou']:.3f}")
print(f"\nchange maps: {out}/change.tif and {out}/cva_change.tif, polygons: {out}/change.gpkg "
      f"({inf['polygons']['regions']} regions of 5 pixels or more) - open them in QGIS;\n"
      f"quick look: {out}/change.png (date 2, changes in red), training curves: {out}/model.cdm.curves.svg")
PY

echo "== mtkd_recipe: Origin-Partition teachers distilled into a student, on held-out synthetic scenes" >&2
echo
bash scripts/mtkd_recipe.sh --out "$OUT/mtkd"

echo "== HiCD: the model above as clean-pair teacher, a student for scenes whose date 2 is seen at 4x coarser resolution" >&2
HICD=(--train "$OUT/parts/origin.csv" --val "$OUT/parts/val.csv" --degrade res=4 --init "$OUT/model.cdm"
      --epochs 4 --batch-size 8 --lr 1e-3 --class-weights 1,3 --seed 0)
# The baseline HiCD has to beat: the same fine-tuning on degraded pairs without a teacher.
"$BIN/cd-train-teacher" "${HICD[@]}" --arch fc-siam-diff --out "$OUT/degraded_direct.cdm" > "$OUT/hicd_direct.json"
"$BIN/cd-distill" --method hicd --teacher "$OUT/model.cdm" "${HICD[@]/--init/--student-init}" \
    --out "$OUT/hicd_student.cdm" > "$OUT/hicd_student.json"
# A held-out scene with its own changes, date 2 degraded by cd-degrade, mapped by all three.
"$BIN/cd-synth" --out "$OUT/hicd_scene" --width 512 --height 512 --bands 4 --type UInt16 --seed 8 > /dev/null
"$BIN/cd-degrade" --in "$OUT/hicd_scene/post.tif" --out "$OUT/hicd_scene/post_res4.tif" --degrade res=4 > /dev/null
for m in model degraded_direct hicd_student; do
    "$BIN/cd-infer" --model "$OUT/$m.cdm" --pre "$OUT/hicd_scene/pre.tif" --post "$OUT/hicd_scene/post_res4.tif" \
        --out "$OUT/hicd_$m.tif" --threshold 0.5 -q > /dev/null
    "$BIN/cd-eval" --pred "$OUT/hicd_$m.tif" --ref "$OUT/hicd_scene/label.tif" > "$OUT/hicd_eval_$m.json"
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("\nHiCD on a held-out synthetic scene whose date 2 is degraded (res=4), change class:")
for name, m in (("clean-pair teacher", "model"), ("fine-tuned on degraded pairs", "degraded_direct"),
                ("HiCD student", "hicd_student")):
    c = json.load(open(f"{out}/hicd_eval_{m}.json"))["pooled"]["change"]
    print(f"  {name:30s} F1 {c['f1']:.3f}  IoU {c['iou']:.3f}  precision {c['precision']:.3f}  recall {c['recall']:.3f}")
print("  (one small synthetic scene and 4 epochs: a check that the chain runs, not a benchmark;"
      " docs/methods.md says what has been measured)")
PY

echo "== KD-MSI: change maps from image-level labels (scripts/kdmsi_recipe.sh)" >&2
bash scripts/kdmsi_recipe.sh "$OUT/kdmsi"

cat <<DONE

== where everything is ($OUT)
  change map, probability, polygons:  $OUT/change.tif  $OUT/change_prob.tif  $OUT/change.gpkg
  quick look (date 2, changes in red): $OUT/change.png
  the model and its training curves:   $OUT/model.cdm  $OUT/model.cdm.curves.svg
  MTKD, HiCD, KD-MSI:                  $OUT/mtkd/  $OUT/hicd_*.tif  $OUT/kdmsi/
To look at the result: open $OUT/change.png, or in QGIS: qgis $OUT/change.tif $OUT/change.gpkg
DONE
