#!/usr/bin/env bash
# Supervised accuracy on OSCD: train a model with cd-train-teacher on the 14 training cities,
# map the 10 test cities with cd-infer, score them with cd-eval (pooled and per city).
# Validation (best epoch by change-class F1) uses tiles of the training cities only; the
# test cities are never looked at before the final scoring.
#
#   usage: benchmarks/bench_oscd_train.sh ARCH BANDSET [EPOCHS] [-- extra cd-train-teacher options]
#     ARCH     fc-ef | fc-siam-diff | fc-siam-conc | resnet-fpn | bit
#     BANDSET  rgb (B04,B03,B02) | all (the 13 Sentinel-2 bands on the 10 m grid)
#              | no60m (all but the 60 m bands B01, B09, B10)
#   e.g.     benchmarks/bench_oscd_train.sh fc-siam-diff rgb 60
#
# CDK_VAL_SCENES=CITY,CITY validates on those training cities, held out whole
# (cd-partition --val-scenes, into DATA/parts-CITY-CITY), instead of the default 10 % of
# tiles drawn per CAR partition, whose pixels the overlapping training tiles mostly cover.
# CDK_VAL_BLOCKS=PX validates on PX-pixel blocks of every training city instead, the
# training tiles beside them left out (cd-partition --val-blocks, into DATA/parts-blocksPX).
# CDK_OSCD=DIR reads another copy of the dataset with the same layout (e.g. one made by
# benchmarks/oscd_standardise.py); give it its own CDK_BENCH_DIR.
# With `--save-last FILE` among the options the last epoch's bundle is scored too (maps in
# RUN/last), after the best one.
# Resumable: tiles, a finished model and finished maps are kept in $CDK_BENCH_DIR
# (default /tmp/cdk-bench-oscd-train); an interrupted training continues from its
# checkpoint when the script is run again with the same arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
if [ -n "${CDK_VAL_SCENES:-}" ] && [ -n "${CDK_VAL_BLOCKS:-}" ]; then
  echo "CDK_VAL_SCENES and CDK_VAL_BLOCKS are exclusive: set one" >&2; exit 2
fi
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
ARCH=${1:-fc-siam-diff}
BANDSET=${2:-rgb}
EPOCHS=${3:-60}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
BANDS=$(oscd_bands "$BANDSET")
TILE=${CDK_TILE:-96}
OVERLAP=${CDK_OVERLAP:-48}
ROOT=${CDK_BENCH_DIR:-/tmp/cdk-bench-oscd-train}
DATA=$ROOT/$BANDSET-t$TILE-o$OVERLAP
RUN=$ROOT/$ARCH-$BANDSET-e$EPOCHS${CDK_RUN_TAG:+-$CDK_RUN_TAG}
mkdir -p "$ROOT" "$RUN"

oscd_tiles "$DATA" "$BANDS" "$TILE" "$OVERLAP"
PARTS=$DATA/parts
if [ -n "${CDK_VAL_SCENES:-}" ]; then
  PARTS=$DATA/parts-${CDK_VAL_SCENES//,/-}
  [ -f "$PARTS/summary.json" ] || "$BIN/cd-partition" -q "$DATA/tiles/tiles.csv" --out "$PARTS" \
      --val-scenes "$CDK_VAL_SCENES" > /dev/null
elif [ -n "${CDK_VAL_BLOCKS:-}" ]; then
  PARTS=$DATA/parts-blocks$CDK_VAL_BLOCKS
  [ -f "$PARTS/summary.json" ] || "$BIN/cd-partition" -q "$DATA/tiles/tiles.csv" --out "$PARTS" \
      --val-blocks "$CDK_VAL_BLOCKS" > /dev/null
fi

LAST=
prev=
for a in "$@"; do
  case $a in --save-last=*) LAST=${a#--save-last=} ;; esac
  [ "$prev" = --save-last ] && LAST=$a
  prev=$a
done

start=$(date +%s)
"$BIN/cd-train-teacher" --train "$PARTS/origin.csv" --val "$PARTS/val.csv" --arch "$ARCH" \
    --out "$RUN/model.cdm" --epochs "$EPOCHS" --resume "$@" > "$RUN/train.json.new" 2> >(tee -a "$RUN/train.log" >&2)
train_end=$(date +%s)
# Rerunning a finished run skips training, and its short "skipped" summary must not replace
# the one the training wrote (best epoch, samples/s).
if [ -f "$RUN/train.json" ] && grep -q '"skipped": true' "$RUN/train.json.new"; then
  rm "$RUN/train.json.new"
else
  mv "$RUN/train.json.new" "$RUN/train.json"
fi

oscd_map_test "$RUN" "$BANDS" --model "$RUN/model.cdm"
end=$(date +%s)

/usr/bin/python3 - "$RUN" "$ARCH" "$BANDSET" "$BANDS" "$start" "$train_end" "$end" <<'PY'
import json, sys
run, arch, bandset, bands = sys.argv[1:5]
start, train_end, end = map(int, sys.argv[5:8])
t = json.load(open(f"{run}/train.json"))
log = [json.loads(l) for l in open(f"{run}/model.cdm.log.jsonl")]
print(f"{arch} on OSCD, {bandset} ({bands}), {len(log)} epochs logged, best epoch {t.get('best_epoch')}"
      f" (val F1 {t['metrics']['change']['f1']:.3f} on training-city tiles)")
print(f"training {sum(l['seconds'] for l in log) / 60:.1f} min in all sessions "
      f"({t.get('samples_per_s', 0):.1f} samples/s), inference of the 10 test cities {end - train_end} s\n")
PY
oscd_city_table "$RUN/eval.json"
if [ -n "$LAST" ]; then
  mkdir -p "$RUN/last"
  oscd_map_test "$RUN/last" "$BANDS" --model "$LAST"
  epoch=$(/usr/bin/python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["epoch"])' \
      "$RUN/model.cdm.log.jsonl")
  echo
  echo "the last epoch's bundle ($LAST, epoch $epoch):"
  echo
  oscd_city_table "$RUN/last/eval.json"
fi
