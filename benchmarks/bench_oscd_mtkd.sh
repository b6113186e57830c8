#!/usr/bin/env bash
# MTKD (Origin-Partition teachers distilled into one student) on OSCD, for one architecture
# and several seeds. For each seed: the origin model on every training tile; a control that
# continues the origin for the student's epochs without distillation (cd-train-teacher
# --init, i.e. kd weight 0); and for each CAR partition scheme, one teacher per partition
# (initialised from the origin) and the MTKD student (cd-distill from the origin). Every
# model maps the 10 test cities (the teachers through cd-infer's O-P two-pass mode) and is
# scored with cd-eval; benchmarks/oscd_mtkd_table.py prints the tables (mean and spread
# over seeds, and F1 per CAR range of the test tiles).
#
#   usage: benchmarks/bench_oscd_mtkd.sh ARCH [SEEDS=0,1,2] [-- extra options for every model]
#   environment (defaults): CDK_BANDSET (rgb), CDK_WIDTH (16), CDK_EPOCHS (10, origin),
#     CDK_TEACHER_EPOCHS (5), CDK_STUDENT_EPOCHS (6, student and control),
#     CDK_SCHEMES ("quantiles thresholds": --quantiles 3 and the paper's 0.05,0.2),
#     CDK_SCHEME_SEEDS (the seeds that run the schemes after the first; default all),
#     CDK_KD_WEIGHT (1), CDK_KD_KL (0, weight of the KL term), CDK_KD_T (1, its
#     temperature): other values write student_SCHEME-kdW[-klK-tT].cdm beside λ = 1's,
#     reusing the seed's origin, control and teachers), CDK_BENCH_DIR
#     (/tmp/cdk-bench-oscd-train: tiles shared with bench_oscd_train.sh)
# Resumable: finished bundles and maps are kept; rerun the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/oscd_common.sh
[ -d "$OSCD" ] || { echo "skipped: $OSCD is absent" >&2; exit 0; }
ARCH=${1:-fc-siam-diff}
SEEDS=${2:-0,1,2}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = "--" ] && shift
BANDSET=${CDK_BANDSET:-rgb}
BANDS=$(oscd_bands "$BANDSET")
WIDTH=${CDK_WIDTH:-16}
EPOCHS=${CDK_EPOCHS:-10} TEACHER_EPOCHS=${CDK_TEACHER_EPOCHS:-5} STUDENT_EPOCHS=${CDK_STUDENT_EPOCHS:-6}
SCHEMES=${CDK_SCHEMES:-quantiles thresholds}
SCHEME_SEEDS=${CDK_SCHEME_SEEDS:-$SEEDS}
KD=${CDK_KD_WEIGHT:-1}
KL=${CDK_KD_KL:-0} TEMP=${CDK_KD_T:-1}
# A student with other distillation weights gets its own bundle and maps beside λ = 1's:
# student_SCHEME-kdW[-klK-tT].
KD_TAG=""
[ "$KD" = 1 ] && [ "$KL" = 0 ] || KD_TAG=-kd$KD
[ "$KL" = 0 ] || KD_TAG=$KD_TAG-kl$KL-t$TEMP
ROOT=${CDK_BENCH_DIR:-/tmp/cdk-bench-oscd-train}
DATA=$ROOT/$BANDSET-t96-o32
oscd_tiles "$DATA" "$BANDS" 96 32
# The quantile scheme splits the same training tiles (validation stays parts/val.csv).
[ -f "$DATA/parts_quantiles/summary.json" ] ||
  "$BIN/cd-partition" -q "$DATA/parts/origin.csv" --quantiles 3 --val-fraction 0 --out "$DATA/parts_quantiles" > /dev/null
step() { echo "== $(date +%H:%M:%S) $*" >&2; }

COMMON=(--arch "$ARCH" --width "$WIDTH" --batch-size 16 --class-weights 1 10 --lr 1e-3 --workers 2
        --device cpu --resume "$@")
for seed in ${SEEDS//,/ }; do
  RUN=$ROOT/mtkd-$ARCH-w$WIDTH-$BANDSET-s$seed
  mkdir -p "$RUN"
  step "seed $seed: origin, $EPOCHS epochs"
  "$BIN/cd-train-teacher" -q --train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" --seed "$seed" \
      --epochs "$EPOCHS" --out "$RUN/origin.cdm" "${COMMON[@]}" > /dev/null
  mkdir -p "$RUN/maps_origin" && oscd_map_test "$RUN/maps_origin" "$BANDS" --model "$RUN/origin.cdm"
  step "seed $seed: control (origin + $STUDENT_EPOCHS epochs, no distillation)"
  "$BIN/cd-train-teacher" -q --train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" --seed "$seed" \
      --epochs "$STUDENT_EPOCHS" --init "$RUN/origin.cdm" --out "$RUN/control.cdm" "${COMMON[@]}" > /dev/null
  mkdir -p "$RUN/maps_control" && oscd_map_test "$RUN/maps_control" "$BANDS" --model "$RUN/control.cdm"
  case ",$SCHEME_SEEDS," in *",$seed,"*) schemes=$SCHEMES ;; *) schemes=${SCHEMES%% *} ;; esac
  for scheme in $schemes; do
    parts=$DATA/parts
    [ "$scheme" = quantiles ] && parts=$DATA/parts_quantiles
    teachers=""
    for p in small medium large; do
      step "seed $seed, $scheme: teacher $p, $TEACHER_EPOCHS epochs from the origin"
      "$BIN/cd-train-teacher" -q --train "$parts/$p.csv" --seed "$seed" --epochs "$TEACHER_EPOCHS" \
          --init "$RUN/origin.cdm" --out "$RUN/teacher_${scheme}_$p.cdm" "${COMMON[@]}" > /dev/null
      teachers="${teachers:+$teachers,}$p=$RUN/teacher_${scheme}_$p.cdm"
    done
    mkdir -p "$RUN/maps_op_$scheme" &&
      oscd_map_test "$RUN/maps_op_$scheme" "$BANDS" --op-origin "$RUN/origin.cdm" --op-teachers "$teachers"
    step "seed $seed, $scheme: MTKD student, $STUDENT_EPOCHS epochs from the origin, kd weight $KD"
    "$BIN/cd-distill" -q --method mtkd --train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" \
        --seed "$seed" --epochs "$STUDENT_EPOCHS" --student-init "$RUN/origin.cdm" --teachers "$teachers" \
        --kd-weight "$KD" --kd-kl-weight "$KL" --kd-temperature "$TEMP" --out "$RUN/student_$scheme$KD_TAG.cdm" "${COMMON[@]}" > /dev/null
    mkdir -p "$RUN/maps_student_$scheme$KD_TAG" &&
      oscd_map_test "$RUN/maps_student_$scheme$KD_TAG" "$BANDS" --model "$RUN/student_$scheme$KD_TAG.cdm"
  done
done
/usr/bin/python3 benchmarks/oscd_mtkd_table.py "$OSCD" "$DATA" "$ROOT/mtkd-$ARCH-w$WIDTH-$BANDSET-s" "$SEEDS"
