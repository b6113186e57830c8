#!/usr/bin/env bash
# KD-MSI on the embedded default: change maps from image-level labels ("this tile changed /
# did not"), no pixel label anywhere in the training.
#   1. cd-synth: a training scene (seed 7, 1024 px) and a held-out test scene (seed 8, 512 px)
#   2. the bits: tiles.csv's `changed` of a tiling with the known label, kept as id,changed
#      (what an analyst would type); the scene tiled again WITHOUT a label (cd-tile
#      --tile-labels), so the training tile set holds no pixel label at all
#   3. cd-partition: validation tiles drawn per bit
#   4. cd-distill --method kd-msi: teacher and student CAM classifiers trained together
#   5. cd-infer --tau-sweep: the threshold chosen on a few pixel-labelled tiles (15 % of a
#      labelled tiling: what a user who labels a handful of tiles does)
#   6. cd-infer: the test scene with (a) the teacher's plain multiscale CAM and (b) the student
#      with multiscale sigmoid inference (MSI), at 0.5 and at the swept threshold
#   7. cd-infer --tiles: MSI pseudo-masks of the training tiles (gated by their bits), then
#      (c) an ordinary FC-Siam-diff trained on them with cd-train-teacher
#   8. for comparison (d) the same FC-Siam-diff trained on the pixel labels, and (e) cd-cva
#   9. cd-eval of all of them against the test scene's known changes: one table
# Usage: scripts/kdmsi_recipe.sh [OUT_DIR=kdmsi-out] (refused if it exists: nothing is deleted)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CDK_BUILD_DIR:-build}/apps
OUT=${1:-kdmsi-out}
if [ -e "$OUT" ]; then
    echo "kdmsi_recipe: $OUT exists; give another folder or remove it" >&2
    exit 1
fi
mkdir -p "$OUT"
step() { echo "== $(date +%H:%M:%S) $*" >&2; }

step "cd-synth: training scene (1024 px) and held-out test scene (512 px)"
"$BIN/cd-synth" --out "$OUT/scene" --width 1024 --height 1024 --bands 4 --type UInt16 --seed 7 > /dev/null
"$BIN/cd-synth" --out "$OUT/test" --width 512 --height 512 --bands 4 --type UInt16 --seed 8 > /dev/null

step "image-level labels: one bit per 32 px tile, then tiles without any pixel label"
"$BIN/cd-tile" -q --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" --label "$OUT/scene/label.tif" \
    --scene-name synthetic --tile-size 32 --out "$OUT/labelled" > "$OUT/tile_labelled.json"
/usr/bin/python3 - "$OUT/labelled/tiles.csv" "$OUT/bits.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
with open(sys.argv[2], "w") as f:
    f.write("id,changed\n")
    for r in rows:
        f.write(f"{r['id']},{r['changed']}\n")
PY
"$BIN/cd-tile" -q --pre "$OUT/scene/pre.tif" --post "$OUT/scene/post.tif" --tile-labels "$OUT/bits.csv" \
    --scene-name synthetic --tile-size 32 --out "$OUT/tiles" > "$OUT/tile.json"
"$BIN/cd-partition" -q "$OUT/tiles/tiles.csv" --out "$OUT/parts" --val-fraction 0.15 --seed 0 > "$OUT/partition.json"

step "cd-distill --method kd-msi: teacher and student trained together on the bits"
"$BIN/cd-distill" --method kd-msi --train "$OUT/parts/origin.csv" --val "$OUT/parts/val.csv" --width 8 \
    --model-option stages=3 --epochs 15 --batch-size 16 --lr 2e-3 --seed 0 --out "$OUT/kdmsi.cdm" > "$OUT/kdmsi.json"

step "cd-infer --tau-sweep: the threshold from a few labelled tiles"
"$BIN/cd-partition" -q "$OUT/labelled/tiles.csv" --out "$OUT/parts_labelled" --val-fraction 0.15 --seed 0 > /dev/null
"$BIN/cd-infer" --model "$OUT/kdmsi.cdm" --tiles "$OUT/parts_labelled/val.csv" --tau-sweep > "$OUT/sweep.json"
TAU=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["best"]["threshold"])' "$OUT/sweep.json")

step "cd-infer: the test scene, (a) teacher CAM and (b) student MSI (threshold 0.5 and $TAU)"
"$BIN/cd-infer" -q --model "$OUT/kdmsi.cdm" --msi-branch teacher --pre "$OUT/test/pre.tif" \
    --post "$OUT/test/post.tif" --out "$OUT/a_teacher_cam.tif" --threshold 0.5 > /dev/null
"$BIN/cd-infer" -q --model "$OUT/kdmsi.cdm" --pre "$OUT/test/pre.tif" --post "$OUT/test/post.tif" \
    --out "$OUT/b_student_msi_05.tif" --threshold 0.5 > /dev/null
"$BIN/cd-infer" -q --model "$OUT/kdmsi.cdm" --pre "$OUT/test/pre.tif" --post "$OUT/test/post.tif" \
    --threshold "$TAU" --out "$OUT/b_student_msi.tif" --prob "$OUT/b_student_msi_prob.tif" > /dev/null

step "pseudo-masks of the training tiles (threshold $TAU), and (c) FC-Siam-diff trained on them"
"$BIN/cd-infer" -q --model "$OUT/kdmsi.cdm" --tiles "$OUT/parts/origin.csv" --threshold "$TAU" \
    --out "$OUT/pseudo_train" > "$OUT/pseudo_train.json"
"$BIN/cd-infer" -q --model "$OUT/kdmsi.cdm" --tiles "$OUT/parts/val.csv" --threshold "$TAU" \
    --out "$OUT/pseudo_val" > "$OUT/pseudo_val.json"
SEG=(--arch fc-siam-diff --width 8 --epochs 10 --batch-size 8 --lr 1e-3 --class-weights 1,3 --seed 0)
"$BIN/cd-train-teacher" "${SEG[@]}" --train "$OUT/pseudo_train/tiles.csv" --val "$OUT/pseudo_val/tiles.csv" \
    --out "$OUT/stage2.cdm" > "$OUT/stage2.json"
"$BIN/cd-infer" -q --model "$OUT/stage2.cdm" --pre "$OUT/test/pre.tif" --post "$OUT/test/post.tif" \
    --out "$OUT/c_stage2.tif" --threshold 0.5 > /dev/null

step "for comparison: (d) the same FC-Siam-diff on pixel labels, (e) cd-cva"
"$BIN/cd-train-teacher" "${SEG[@]}" --train "$OUT/parts_labelled/origin.csv" --val "$OUT/parts_labelled/val.csv" \
    --out "$OUT/supervised.cdm" > "$OUT/supervised.json"
"$BIN/cd-infer" -q --model "$OUT/supervised.cdm" --pre "$OUT/test/pre.tif" --post "$OUT/test/post.tif" \
    --out "$OUT/d_supervised.tif" --threshold 0.5 > /dev/null
"$BIN/cd-cva" -q --pre "$OUT/test/pre.tif" --post "$OUT/test/post.tif" --out "$OUT/e_cva.tif" > /dev/null

for m in a_teacher_cam b_student_msi_05 b_student_msi c_stage2 d_supervised e_cva; do
    "$BIN/cd-eval" -q --pred "$OUT/$m.tif" --ref "$OUT/test/label.tif" > "$OUT/eval_$m.json"
done
/usr/bin/python3 - "$OUT" "$TAU" <<'PY'
import csv, json, sys
out, tau = sys.argv[1:3]
bits = list(csv.DictReader(open(f"{out}/bits.csv")))
train = list(csv.DictReader(open(f"{out}/parts_labelled/origin.csv")))
pixels = sum(int(r["width"]) * int(r["height"]) for r in train)
print(f"\nKD-MSI on the held-out synthetic scene (512 px), change class; trained from "
      f"{len(bits)} image-level bits ({sum(r['changed'] == '1' for r in bits)} changed) where (d) used "
      f"{pixels} labelled pixels:")
print("| model | labels | F1 | IoU | precision | recall |\n|---|---|---:|---:|---:|---:|")
for name, labels, m in (("(a) teacher CAM, multiscale", "bits", "a_teacher_cam"),
                        ("(b) KD-MSI student, MSI, τ 0.5", "bits", "b_student_msi_05"),
                        (f"(b) KD-MSI student, MSI, τ {tau}", "bits + τ", "b_student_msi"),
                        ("(c) fc-siam-diff on (b)'s pseudo-masks", "bits + τ", "c_stage2"),
                        ("(d) fc-siam-diff, pixel labels", "pixels", "d_supervised"),
                        ("(e) cd-cva", "none", "e_cva")):
    c = json.load(open(f"{out}/eval_{m}.json"))["pooled"]["change"]
    print(f"| {name} | {labels} | {c['f1']:.3f} | {c['iou']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} |")
p = json.load(open(f"{out}/pseudo_train.json"))
print(f"\n{p['count']} pseudo-masks, {p['changed_tiles']} with change; maps in {out}/ "
      "(a_teacher_cam.tif ... e_cva.tif, QGIS styles beside them).")
print(f"τ {tau}: the best F1 of `cd-infer --tau-sweep` on {len(list(csv.DictReader(open(f'{out}/parts_labelled/val.csv'))))} "
      "pixel-labelled tiles (\"bits + τ\"); a user without any picks 0.5.")
print("One small synthetic scene: a check that the chain runs, not a benchmark (docs/benchmarks.md has OSCD).")
PY
