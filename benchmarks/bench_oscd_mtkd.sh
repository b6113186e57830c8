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
#   environment (defaults): CDK_BANDSET (rgb), CDK_WIDTH (16), CDK_EPOCHS (10, origin; another
#     value gets its own run folders, ...-oeN-sSEED, since every model there starts from it),
#     CDK_TEACHER_EPOCHS (5), CDK_STUDENT_EPOCHS (6, student and control),
#     CDK_SCHEMES ("quantiles thresholds": --quantiles 3 and the paper's 0.05,0.2;
#     also quantiles2: two partitions, one threshold, as in the paper's ablation),
#     CDK_SCHEME_SEEDS (the seeds that run the schemes after the first; default all),
#     CDK_TEACHER_INIT (origin, or scratch: teachers trained from random weights),
#     CDK_KD_WEIGHT (1: this benchmark found cd-distill's default 0.1, and keeps 1 as the
#     unsuffixed student so that earlier runs' files keep their names), CDK_KD_KL (0, weight
#     of the KL term), CDK_KD_T (1, its temperature), CDK_STUDENT_CW (the student's task-loss change weight; default that of
#     the other models, 10; another value also trains control-cwC, the control with that
#     weight), CDK_BENCH_DIR (/tmp/cdk-bench-oscd-train: tiles shared with
#     bench_oscd_train.sh)
# Variants sit beside the defaults' files and reuse the seed's origin and control (and the
# teachers when only the student differs): teacher_SCHEME[-scratch][-teN]_PART.cdm,
# maps_op_SCHEME[-scratch][-teN], student_SCHEME[-scratch][-teN][-kdW][-klK-tT][-cwC].cdm.
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
TINIT=${CDK_TEACHER_INIT:-origin}
CW=${CDK_STUDENT_CW:-10}
case $TINIT in origin|scratch) ;; *) echo "CDK_TEACHER_INIT must be origin or scratch, not '$TINIT'" >&2; exit 2 ;; esac
# Teachers and students made with other settings get their own files beside the defaults'.
T_TAG=""
[ "$TINIT" = origin ] || T_TAG=-$TINIT
[ "$TEACHER_EPOCHS" = 5 ] || T_TAG=$T_TAG-te$TEACHER_EPOCHS
S_TAG=""
[ "$KD" = 1 ] && [ "$KL" = 0 ] || S_TAG=-kd$KD
[ "$KL" = 0 ] || S_TAG=$S_TAG-kl$KL-t$TEMP
[ "$CW" = 10 ] || S_TAG=$S_TAG-cw$CW
ROOT=${CDK_BENCH_DIR:-/tmp/cdk-bench-oscd-train}
PREFIX=$(oscd_mtkd_prefix "$ROOT" "$ARCH" "$WIDTH" "$BANDSET" "$EPOCHS")
DATA=$ROOT/$BANDSET-t96-o32
oscd_tiles "$DATA" "$BANDS" 96 32
# The quantile schemes split the same training tiles (validation stays parts/val.csv).
[ -f "$DATA/parts_quantiles/summary.json" ] ||
  "$BIN/cd-partition" -q "$DATA/parts/origin.csv" --quantiles 3 --val-fraction 0 --out "$DATA/parts_quantiles" > /dev/null
[ -f "$DATA/parts_quantiles2/summary.json" ] ||
  "$BIN/cd-partition" -q "$DATA/parts/origin.csv" --quantiles 2 --val-fraction 0 --out "$DATA/parts_quantiles2" > /dev/null
step() { echo "== $(date +%H:%M:%S) $*" >&2; }

BASE=(--arch "$ARCH" --width "$WIDTH" --batch-size 16 --lr 1e-3 --workers 2 --device cpu --resume "$@")
COMMON=("${BASE[@]}" --class-weights 1 10)
for seed in ${SEEDS//,/ }; do
  RUN=$PREFIX$seed
  mkdir -p "$RUN"
  step "seed $seed: origin, $EPOCHS epochs"
  "$BIN/cd-train-teacher" -q --train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" --seed "$seed" \
      --epochs "$EPOCHS" --out "$RUN/origin.cdm" "${COMMON[@]}" > /dev/null
  mkdir -p "$RUN/maps_origin" && oscd_map_test "$RUN/maps_origin" "$BANDS" --model "$RUN/origin.cdm"
  # The control; a student change weight other than 10 gets its own control as well.
  for cw in 10 $([ "$CW" = 10 ] || echo "$CW"); do
    control=control
    [ "$cw" = 10 ] || control=control-cw$cw
    step "seed $seed: $control (origin + $STUDENT_EPOCHS epochs, change weight $cw, no distillation)"
    "$BIN/cd-train-teacher" -q --train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" --seed "$seed" \
        --epochs "$STUDENT_EPOCHS" --init "$RUN/origin.cdm" --out "$RUN/$control.cdm" "${BASE[@]}" \
        --class-weights 1 "$cw" > /dev/null
    mkdir -p "$RUN/maps_$control" && oscd_map_test "$RUN/maps_$control" "$BANDS" --model "$RUN/$control.cdm"
  done
  case ",$SCHEME_SEEDS," in *",$seed,"*) schemes=$SCHEMES ;; *) schemes=${SCHEMES%% *} ;; esac
  for scheme in $schemes; do
    case $scheme in
      quantiles) parts=$DATA/parts_quantiles ;;
      quantiles2) parts=$DATA/parts_quantiles2 ;;
      thresholds) parts=$DATA/parts ;;
      *) echo "unknown scheme '$scheme' (quantiles, quantiles2, thresholds)" >&2; exit 2 ;;
    esac
    # The scheme's partitions in CAR order, as cd-partition named them.
    names=$(oscd_partition_names "$parts")
    init=(--init "$RUN/origin.cdm")
    [ "$TINIT" = scratch ] && init=()
    teachers=""
    for p in $names; do
      step "seed $seed, $scheme: teacher $p, $TEACHER_EPOCHS epochs from the $TINIT"
      "$BIN/cd-train-teacher" -q --train "$parts/$p.csv" --seed "$seed" --epochs "$TEACHER_EPOCHS" \
          "${init[@]}" --out "$RUN/teacher_$scheme${T_TAG}_$p.cdm" "${COMMON[@]}" > /dev/null
      teachers="${teachers:+$teachers,}$p=$RUN/teacher_$scheme${T_TAG}_$p.cdm"
    done
    mkdir -p "$RUN/maps_op_$scheme$T_TAG" &&
      oscd_map_test "$RUN/maps_op_$scheme$T_TAG" "$BANDS" --op-origin "$RUN/origin.cdm" --op-teachers "$teachers"
    student=student_$scheme$T_TAG$S_TAG
    step "seed $seed, $scheme: MTKD student $student, $STUDENT_EPOCHS epochs from the origin"
    "$BIN/cd-distill" -q --method mtkd --train "$DATA/parts/origin.csv" --val "$DATA/parts/val.csv" \
        --seed "$seed" --epochs "$STUDENT_EPOCHS" --student-init "$RUN/origin.cdm" --teachers "$teachers" \
        --kd-weight "$KD" --kd-kl-weight "$KL" --kd-temperature "$TEMP" --out "$RUN/$student.cdm" \
        "${BASE[@]}" --class-weights 1 "$CW" > /dev/null
    mkdir -p "$RUN/maps_$student" && oscd_map_test "$RUN/maps_$student" "$BANDS" --model "$RUN/$student.cdm"
  done
done
/usr/bin/python3 benchmarks/oscd_mtkd_table.py "$OSCD" "$DATA" "$PREFIX" "$SEEDS"
