#!/usr/bin/env bash
# A shell pipeline, from scene pairs to a scored mosaic of change maps:
#   cd-tile -> cd-partition -> cd-train-teacher -> cd-infer --pairs -> cd-mosaic -> cd-eval
# Each step's JSON result goes to WORK/*.json, its log to stderr.
#
# usage: examples/pipeline.sh WORK [TRAIN_PAIRS.csv TEST_PAIRS.csv]
#   Pairs CSVs: scene,pre,post,label (paths relative to the CSV). Without them two synthetic
#   scenes are made with cd-synth: one to train on, one (beside it on the ground) to map.
# Environment: CDK_BIN (folder of the programs, default: PATH), SIZE (synthetic scene edge,
# default 512), EPOCHS (default 8), VAL_BLOCK (edge of the held-out validation blocks, default
# 256; a quarter of SIZE for the synthetic scenes).
set -euo pipefail
WORK=${1:?usage: examples/pipeline.sh WORK [TRAIN_PAIRS.csv TEST_PAIRS.csv]}
BIN=${CDK_BIN:+$CDK_BIN/}
SIZE=${SIZE:-512} EPOCHS=${EPOCHS:-8}
mkdir -p "$WORK"
if [ $# -ge 3 ]; then
    TRAIN=$2 TEST=$3
else
    # Two synthetic scenes with known changes; the test scene lies east of the training one.
    "${BIN}cd-synth" -q --out "$WORK/train_scene" --width "$SIZE" --height "$SIZE" --seed 1 > /dev/null
    "${BIN}cd-synth" -q --out "$WORK/test_scene" --width "$SIZE" --height "$SIZE" --seed 2 > /dev/null
    printf 'scene,pre,post,label\nt1,train_scene/pre.tif,train_scene/post.tif,train_scene/label.tif\n' > "$WORK/train.csv"
    printf 'scene,pre,post,label\nx1,test_scene/pre.tif,test_scene/post.tif,test_scene/label.tif\n' > "$WORK/test.csv"
    TRAIN=$WORK/train.csv TEST=$WORK/test.csv
    VAL_BLOCK=${VAL_BLOCK:-$((SIZE / 4))}
fi
VAL_BLOCK=${VAL_BLOCK:-256}

"${BIN}cd-tile" -q --pairs "$TRAIN" --tile-size 128 --overlap 32 --out "$WORK/tiles" > "$WORK/tile.json"
# Validation from held-out blocks of every scene, so that its score does not flatter the model.
"${BIN}cd-partition" -q "$WORK/tiles/tiles.csv" --out "$WORK/parts" --quantiles 3 --val-blocks "$VAL_BLOCK" \
    > "$WORK/partition.json"
"${BIN}cd-train-teacher" -q --train "$WORK/parts/origin.csv" --val "$WORK/parts/val.csv" --arch fc-siam-diff \
    --width 8 --epochs "$EPOCHS" --out "$WORK/model.cdm" > "$WORK/train.json"
"${BIN}cd-infer" -q --model "$WORK/model.cdm" --pairs "$TEST" --out "$WORK/maps" --with-polygons --resume \
    > "$WORK/infer.json"
"${BIN}cd-mosaic" -q "$WORK"/maps/*.tif --out "$WORK/mosaic.tif" --polygons "$WORK/mosaic.gpkg" --overwrite \
    > "$WORK/mosaic.json"
# Score each map against its label: the pairs CSV's label column, paths relative to it.
base=$(cd "$(dirname "$TEST")" && pwd)
echo "scene,pred,ref" > "$WORK/eval.csv"
tail -n +2 "$TEST" | while IFS=, read -r scene pre post label; do
    echo "$scene,$(cd "$WORK" && pwd)/maps/$scene.tif,$base/$label" >> "$WORK/eval.csv"
done
"${BIN}cd-eval" -q --pairs "$WORK/eval.csv" > "$WORK/eval.json"
/usr/bin/python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['pooled']['change']; print(f\"pooled change F1 {c['f1']:.3f}, IoU {c['iou']:.3f}\")" "$WORK/eval.json"
