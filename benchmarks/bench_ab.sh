#!/usr/bin/env bash
# A/B speed of two builds of the programs, side by side in one run: training samples/s of
# cd-train-teacher and cd-distill --method mtkd, and megapixels/s of cd-infer (single model,
# flip TTA, Origin-Partition), each pair run alternately ROUNDS times; the table gives each
# side's median and the ratio B / A. For "no slowdown" checks of a refactor.
#   usage: benchmarks/bench_ab.sh BIN_A BIN_B [ROUNDS=3] [THREADS=2]
#   e.g.   benchmarks/bench_ab.sh /tmp/before/apps build/apps
# Work files go to $CDK_BENCH_DIR (default /tmp/cdk-bench-ab).
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/machine.sh
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${3:-3}
THREADS=${4:-2}
WORK=${CDK_BENCH_DIR:-/tmp/cdk-bench-ab}
rm -rf "$WORK"; mkdir -p "$WORK"

# Training data: a 1024x1024 3-band scene in 128-px tiles (64 tiles), partitioned for MTKD.
"$A/cd-synth" -q --out "$WORK/scene" --width 1024 --height 1024 --bands 3 --type UInt8 --seed 7 --border 0 > /dev/null
"$A/cd-tile" -q --pre "$WORK/scene/pre.tif" --post "$WORK/scene/post.tif" --label "$WORK/scene/label.tif" \
    --tile-size 128 --out "$WORK/tiles" > /dev/null
"$A/cd-partition" -q "$WORK/tiles/tiles.csv" --out "$WORK/parts" --quantiles 2 --seed 1 > /dev/null
train=(--arch fc-siam-diff --width 16 --batch-size 8 --device cpu --threads "$THREADS" --workers 2
       --schedule constant --overwrite)
# Teachers for MTKD and O-P (one epoch each; their weights do not change the speed).
"$A/cd-train-teacher" -q --train "$WORK/parts/origin.csv" --out "$WORK/origin.cdm" --epochs 1 "${train[@]}" > /dev/null
for p in small large; do
    "$A/cd-train-teacher" -q --train "$WORK/parts/$p.csv" --out "$WORK/$p.cdm" --epochs 1 "${train[@]}" > /dev/null
done
# Inference scene: 4096x4096, tiled.
"$A/cd-synth" -q --out "$WORK/big" --width 4096 --height 4096 --bands 3 --seed 11 --co TILED=YES > /dev/null
scene=(--pre "$WORK/big/pre.tif" --post "$WORK/big/post.tif" --threads "$THREADS" --overwrite)
teachers="small=$WORK/small.cdm,large=$WORK/large.cdm"

# Training: 4 epochs, epoch 1 the warm-up; samples/s of epochs 2-4 from the JSON lines.
train_sps() {  # BIN OUT_NAME PROGRAM ARGS...
    local bin=$1 name=$2 prog=$3; shift 3
    "$bin/$prog" -q --train "$WORK/tiles/tiles.csv" --out "$WORK/$name.cdm" --epochs 4 "${train[@]}" "$@" > /dev/null
    /usr/bin/python3 -c "
import json, sys
l = [json.loads(x) for x in open(sys.argv[1])][1:]
print(sum(x['samples'] for x in l) / sum(x['train_seconds'] for x in l))" "$WORK/$name.cdm.log.jsonl"
}
infer_mps() {  # BIN ARGS...
    local bin=$1; shift
    "$bin/cd-infer" -q "${scene[@]}" --out "$WORK/map.tif" "$@" | /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['megapixels_per_s'])"
}

: > "$WORK/results.tsv"
for round in $(seq "$ROUNDS"); do
    # Alternate which side goes first, so that drift of the machine falls on both.
    order="A B"; [ $((round % 2)) -eq 0 ] && order="B A"
    for side in $order; do
        bin=$A; [ "$side" = B ] && bin=$B
        printf '%s\ttrain\t%s\n' "$side" "$(train_sps "$bin" "t$side" cd-train-teacher --seed 1)" >> "$WORK/results.tsv"
        printf '%s\tmtkd\t%s\n' "$side" "$(train_sps "$bin" "d$side" cd-distill --method mtkd --teachers "$teachers" \
            --thresholds 0.0 --student-init "$WORK/origin.cdm" --seed 1)" >> "$WORK/results.tsv"
        printf '%s\tinfer\t%s\n' "$side" "$(infer_mps "$bin" --model "$WORK/origin.cdm")" >> "$WORK/results.tsv"
        printf '%s\tinfer-tta\t%s\n' "$side" "$(infer_mps "$bin" --model "$WORK/origin.cdm" --tta)" >> "$WORK/results.tsv"
        printf '%s\tinfer-op\t%s\n' "$side" "$(infer_mps "$bin" --op-origin "$WORK/origin.cdm" --op-teachers "$teachers" \
            --op-thresholds 0.0)" >> "$WORK/results.tsv"
    done
done

/usr/bin/python3 - "$WORK/results.tsv" "$A" "$B" "$ROUNDS" "$THREADS" "$(cpu_label)" <<'PY'
import collections, statistics, sys
path, a, b, rounds, threads, cpu = sys.argv[1:7]
v = collections.defaultdict(list)
for line in open(path):
    side, what, value = line.split()
    v[(side, what)].append(float(value))
print(f"A = {a}\nB = {b}\n{rounds} rounds, alternating, {threads} threads, CPU ({cpu})\n")
print("| job | unit | A median | B median | B / A | A runs | B runs |\n|---|---|---:|---:|---:|---|---|")
units = {"train": "samples/s", "mtkd": "samples/s", "infer": "Mpx/s", "infer-tta": "Mpx/s", "infer-op": "Mpx/s"}
labels = {"train": "cd-train-teacher fc-siam-diff w16, 128 px, batch 8",
          "mtkd": "cd-distill --method mtkd, 2 teachers",
          "infer": "cd-infer 4096², single model",
          "infer-tta": "cd-infer 4096², --tta",
          "infer-op": "cd-infer 4096², Origin-Partition"}
for what in units:
    ma, mb = statistics.median(v[("A", what)]), statistics.median(v[("B", what)])
    fa = " ".join(f"{x:.2f}" for x in v[("A", what)])
    fb = " ".join(f"{x:.2f}" for x in v[("B", what)])
    print(f"| {labels[what]} | {units[what]} | {ma:.2f} | {mb:.2f} | {mb / ma:.3f} | {fa} | {fb} |")
PY
