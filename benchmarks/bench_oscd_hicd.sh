#!/usr/bin/env bash
# HiCD on OSCD: a teacher trained on clean pairs of the 14 training cities, then from its
# weights (a) nothing more, (b) fine-tuning directly on pairs whose date 2 is degraded
# (cd-train-teacher --degrade), (c) plain feature-MSE distillation, (d) the HiCD student
# (cd-distill --method hicd); all mapped on the 10 test cities with date 2 degraded by
# cd-degrade at fixed seeds (the same degraded pairs for every model), and (e) the teacher
# on the clean test pairs (the ceiling). Pooled change-class F1, IoU, precision, recall.
#
#   usage: benchmarks/bench_oscd_hicd.sh [ARCH=fc-siam-diff] [BANDSET=rgb] [SPEC=res=4] [SEED=0]
#          [TEACHER_EPOCHS=20] [EPOCHS=10] [MODELS="direct hicd feature_mse"]
#          (MODELS may also name self, cross and global: HiCD with only that correlation term;
#          hicd-wW: HiCD with every correlation weight W, e.g. hicd-w10;
#          and clean: the teacher fine-tuned EPOCHS more on clean pairs, mapped on clean pairs)
#   e.g.   benchmarks/bench_oscd_hicd.sh fc-siam-diff rgb res=4 0 20 10
#
# Tiles as bench_oscd_train.sh (96 px, CDK_OVERLAP, default 32); training options
# `--batch-size 16 --class-weights 1,10 --lr 1e-3` (the RGB recipe of docs/benchmarks.md),
# fine-tuning at --lr 5e-4 with a constant schedule. Resumable: finished models, degraded
# scenes and maps are kept in $CDK_BENCH_DIR (default /tmp/cdk-bench-oscd-hicd).
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
ARCH=${1:-fc-siam-diff}
BANDSET=${2:-rgb}
SPEC=${3:-res=4}
SEED=${4:-0}
TEACHER_EPOCHS=${5:-20}
EPOCHS=${6:-10}
MODELS=${7:-direct hicd feature_mse}
BANDS=$(oscd_bands "$BANDSET")
ROOT=${CDK_BENCH_DIR:-/tmp/cdk-bench-oscd-hicd}
DATA=$ROOT/data-$BANDSET
RUN=$ROOT/$ARCH-$BANDSET-s$SEED
TAG=$(echo "$SPEC" | tr ',=:%@' '_____')
mkdir -p "$RUN"
oscd_tiles "$DATA" "$BANDS" 96 "${CDK_OVERLAP:-32}"

common=(--train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" --batch-size 16 --class-weights 1,10
        --workers 2 --device cpu --seed "$SEED" --resume)
log() { echo "== $(date +%H:%M:%S) $*" >&2; }

# A rerun skips finished trainings (--resume); their first summary is kept.
keep() {  # FILE: stdin into FILE unless it is a "skipped" summary
    local tmp; tmp=$(mktemp)
    cat > "$tmp"
    if grep -q '"skipped": true' "$tmp"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
log "teacher: $ARCH on clean pairs, $TEACHER_EPOCHS epochs"
"$BIN/cd-train-teacher" -q "${common[@]}" --arch "$ARCH" --epochs "$TEACHER_EPOCHS" --lr 1e-3 \
    --out "$RUN/teacher.cdm" | keep "$RUN/teacher.json"
fine=("${common[@]}" --epochs "$EPOCHS" --lr 5e-4 --schedule constant --degrade "$SPEC")
for m in $MODELS; do
    out=$RUN/$m-$TAG.cdm
    [ "$m" = clean ] && out=$RUN/clean.cdm
    log "$m: $EPOCHS epochs from the teacher, date 2 degraded by $SPEC"
    case $m in
        # The same extra epochs on clean pairs: the ceiling (e) at the students' training budget.
        clean) "$BIN/cd-train-teacher" -q "${common[@]}" --epochs "$EPOCHS" --lr 5e-4 --schedule constant \
                   --arch "$ARCH" --init "$RUN/teacher.cdm" --out "$out" ;;
        direct) "$BIN/cd-train-teacher" -q "${fine[@]}" --arch "$ARCH" --init "$RUN/teacher.cdm" --out "$out" ;;
        hicd) "$BIN/cd-distill" -q --method hicd "${fine[@]}" --teacher "$RUN/teacher.cdm" \
                  --student-init "$RUN/teacher.cdm" --out "$out" ;;
        feature_mse) "$BIN/cd-distill" -q --method hicd "${fine[@]}" --teacher "$RUN/teacher.cdm" \
                  --student-init "$RUN/teacher.cdm" --hicd-self 0 --hicd-cross 0 --hicd-global 0 \
                  --feature-mse 1 --out "$out" ;;
        # HiCD with other correlation weights (self, cross, global): the per-term ablation
        # (one term on, the other two off), or hicd-wW (every weight W, e.g. hicd-w10).
        self|cross|global|hicd-w*)
              case $m in
                  self) w=(1 0 0) ;; cross) w=(0 1 0) ;; global) w=(0 0 1) ;;
                  *) v=${m#hicd-w}
                     [[ $v =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "bad weight in model '$m'" >&2; exit 2; }
                     w=("$v" "$v" "$v") ;;
              esac
              "$BIN/cd-distill" -q --method hicd "${fine[@]}" --teacher "$RUN/teacher.cdm" \
                  --student-init "$RUN/teacher.cdm" --hicd-self "${w[0]}" --hicd-cross "${w[1]}" \
                  --hicd-global "${w[2]}" --out "$out" ;;
        *) echo "unknown model '$m'" >&2; exit 2 ;;
    esac | keep "${out%.cdm}.json"
done

# The test cities' dates, each stacked into one VRT (the bands in BANDSET order, on the grid
# of the first), date 2 degraded with a fixed seed per city: the same pairs for every model.
DEG=$ROOT/test-$BANDSET-$TAG
mkdir -p "$DEG"
i=0
for city in $(tr ',' ' ' < "$OSCD/test.txt"); do
    i=$((i + 1))
    [ -f "$DEG/$city.tif" ] && [ -f "$DEG/$city-1.vrt" ] && continue
    rm -f "$DEG/$city.tif"
    for d in 1 2; do
        files=()
        for b in $(echo "$BANDS" | tr ',' ' '); do files+=("$(ls "$OSCD/$city/imgs_$d/"*"_$b.tif")"); done
        gdalbuildvrt -q -separate -resolution highest "$DEG/$city-$d.vrt" "${files[@]}"
    done
    "$BIN/cd-degrade" -q --in "$DEG/$city-2.vrt" --out "$DEG/$city.tif" --degrade "$SPEC" --seed "$i" > /dev/null
done

# Map and score: MODEL on the degraded (or clean) test pairs into RUN/maps-NAME.
score() {  # NAME MODEL clean|degraded
    local dir=$RUN/maps-$1 city post
    mkdir -p "$dir"
    echo "scene,pred,ref" > "$dir/eval.csv"
    for city in $(tr ',' ' ' < "$OSCD/test.txt"); do
        post=$DEG/$city.tif
        [ "$3" = clean ] && post=$DEG/$city-2.vrt
        [ -f "$dir/$city.tif" ] || "$BIN/cd-infer" -q --model "$2" --pre "$DEG/$city-1.vrt" --post "$post" \
            --threshold 0.5 --out "$dir/$city.tif" > /dev/null
        echo "$city,$city.tif,$OSCD/$city/cm.tif" >> "$dir/eval.csv"
    done
    "$BIN/cd-eval" -q --pairs "$dir/eval.csv" > "$dir/eval.json"
}
log "mapping the 10 test cities"
score teacher-clean "$RUN/teacher.cdm" clean
score teacher-$TAG "$RUN/teacher.cdm" degraded
for m in $MODELS; do
    if [ "$m" = clean ]; then score clean "$RUN/clean.cdm" clean; else score "$m-$TAG" "$RUN/$m-$TAG.cdm" degraded; fi
done

/usr/bin/python3 - "$RUN" "$TAG" "$SPEC" "$ARCH" "$BANDSET" "$SEED" "$MODELS" <<'PY'
import json, sys
run, tag, spec, arch, bandset, seed, models = sys.argv[1:8]
rows = [("(a) teacher, degraded test pairs", f"teacher-{tag}")]
names = {"direct": "(b) fine-tuned on degraded pairs", "feature_mse": "(c) feature-MSE distillation",
         "hicd": "(d) HiCD student", "self": "(d) self-correlation only",
         "cross": "(d) cross-correlation only", "global": "(d) global correlation only"}
names.update({m: f"(d) HiCD, correlation weights {m[6:]}" for m in models.split() if m.startswith("hicd-w")})
rows += [(names[m], f"{m}-{tag}") for m in models.split() if m != "clean"]
rows.append(("(e) teacher, clean test pairs", "teacher-clean"))
if "clean" in models.split():
    rows.append(("(e') fine-tuned on clean pairs, clean test pairs", "clean"))
print(f"{arch}, {bandset}, date 2 degraded by {spec}, seed {seed}: pooled over the 10 OSCD test cities\n")
print("| model | F1 | IoU | precision | recall |\n|---|---:|---:|---:|---:|")
for label, d in rows:
    c = json.load(open(f"{run}/maps-{d}/eval.json"))["pooled"]["change"]
    print(f"| {label} | {c['f1']:.3f} | {c['iou']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} |")
PY
