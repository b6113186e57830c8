#!/usr/bin/env bash
# Training speed: cd-train-teacher against a Python + PyTorch script (benchmarks/train_speed.py)
# that trains the same FC-Siam-diff on the same tiles, with the same batch size, threads,
# optimiser and loss, run one after the other on this machine.
#   usage: benchmarks/bench_train.sh [TILE=128] [BATCH=8] [THREADS=2] [WIDTH=16] [PRECISION=fp32]
#   (after scripts/build.sh). PRECISION amp: both trainers in bfloat16 mixed precision
#   (cd-train-teacher --amp, torch.autocast in Python); needs a CPU with AVX-512.
#   CDK_ROUNDS=N (default 1) runs the pair N times, alternating, and reports every round's
#   ratio and their median: a short run's figures drift with the machine (its matrix-product
#   rate moved by 10 % between minutes on one 2-core machine), so pairs taken close together
#   and repeated say more than one pair.
# Needs Debian's python3-torch and python3-gdal (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/machine.sh
BIN=$PWD/build/apps
TILE=${1:-128}
BATCH=${2:-8}
THREADS=${3:-2}
WIDTH=${4:-16}
PRECISION=${5:-fp32}
ROUNDS=${CDK_ROUNDS:-1}
case $PRECISION in
    fp32) AMP=() ;;
    amp) AMP=(--amp) ;;
    *) echo "bench_train.sh: precision must be fp32 or amp, not '$PRECISION'" >&2; exit 2 ;;
esac
WORK=${CDK_BENCH_DIR:-/tmp/cdk-bench-train}
rm -rf "$WORK"; mkdir -p "$WORK"
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "skipped: python3-torch is not installed" >&2; exit 0; }

# 1024x1024, 3 bands, UInt8: 64 tiles of 128 px, 8 steps of 8 per epoch.
"$BIN/cd-synth" -q --out "$WORK/scene" --width 1024 --height 1024 --bands 3 --type UInt8 --seed 7 --border 0 > /dev/null
"$BIN/cd-tile" -q --pre "$WORK/scene/pre.tif" --post "$WORK/scene/post.tif" --label "$WORK/scene/label.tif" \
    --tile-size "$TILE" --out "$WORK/tiles" > /dev/null
tiles=$(($(wc -l < "$WORK/tiles/tiles.csv") - 1))
steps_per_epoch=$((tiles / BATCH))

# cd-train-teacher: 4 epochs, flips/rotations/swaps as by default; epoch 1 is the warm-up,
# epochs 2-4 are measured (the per-epoch JSON lines carry samples/s of the training loop).
# Python: one epoch of warm-up steps, then three epochs' worth of steps measured.
for round in $(seq "$ROUNDS"); do
    /usr/bin/time -f '%M' -o "$WORK/cpp-$round.rss" "$BIN/cd-train-teacher" -q --train "$WORK/tiles/tiles.csv" \
        --arch fc-siam-diff --width "$WIDTH" --out "$WORK/m.cdm" --overwrite --epochs 4 --batch-size "$BATCH" \
        --device cpu --threads "$THREADS" --workers 2 --schedule constant "${AMP[@]}" > "$WORK/cpp-$round.json"
    cp "$WORK/m.cdm.log.jsonl" "$WORK/cpp-$round.log.jsonl"
    /usr/bin/time -f '%M' -o "$WORK/py-$round.rss" /usr/bin/python3 benchmarks/train_speed.py "$WORK/tiles/tiles.csv" \
        --batch-size "$BATCH" --warmup "$steps_per_epoch" --steps $((3 * steps_per_epoch)) \
        --threads "$THREADS" --workers 2 --width "$WIDTH" "${AMP[@]}" > "$WORK/py-$round.json"
done

# The machine's dense float32 rate with the same threads, for scale (2048^2 matrix products).
/usr/bin/python3 -c "
import time, torch
torch.set_num_threads($THREADS); a = torch.randn(2048, 2048); b = torch.randn(2048, 2048); a @ b
t = time.perf_counter(); [a @ b for _ in range(10)]; print(2 * 2048**3 * 10 / (time.perf_counter() - t) / 1e9)
" > "$WORK/gflops.txt"

/usr/bin/python3 - "$WORK" "$TILE" "$BATCH" "$THREADS" "$tiles" "$WIDTH" "$PRECISION" "$(cpu_label)" "$ROUNDS" <<'PY'
import json, statistics, sys
work, tile, batch, threads, tiles, width, precision, cpu, rounds = sys.argv[1:10]
rows = []
for k in range(1, int(rounds) + 1):
    measured = [json.loads(l) for l in open(f"{work}/cpp-{k}.log.jsonl")][1:]
    cpp = sum(l["samples"] for l in measured) / sum(l["train_seconds"] for l in measured)
    py = json.load(open(f"{work}/py-{k}.json"))
    rss = {s: int(open(f"{work}/{s}-{k}.rss").read().split()[-1]) // 1024 for s in ("cpp", "py")}
    rows.append((cpp, py["samples_per_s"], rss, py["torch"]))
print(f"fc-siam-diff width {width}, {tiles} tiles of {tile}x{tile}x3, batch {batch}, {threads} threads, CPU ({cpu}), "
      f"{'bfloat16 mixed precision' if precision == 'amp' else 'float32'}\n")
if len(rows) == 1:
    cpp, py, rss, torch_version = rows[0]
    print("| trainer | samples/s | peak RSS (MiB) |\n|---|---:|---:|")
    print(f"| cd-train-teacher (LibTorch) | {cpp:.2f} | {rss['cpp']} |")
    print(f"| Python + PyTorch {torch_version} | {py:.2f} | {rss['py']} |")
    print(f"\nratio cd-train-teacher / Python: {cpp / py:.2f}x; ", end="")
else:
    print("| round | cd-train-teacher samples/s | Python samples/s | ratio | peak RSS C++ / Python (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for k, (cpp, py, rss, _) in enumerate(rows, 1):
        print(f"| {k} | {cpp:.2f} | {py:.2f} | {cpp / py:.2f}x | {rss['cpp']} / {rss['py']} |")
    ratios = [cpp / py for cpp, py, _, _ in rows]
    print(f"\nratio cd-train-teacher / Python: median {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}x over {len(rows)} rounds); ", end="")
print(f"float32 matrix product on this machine: {float(open(work + '/gflops.txt').read()):.0f} GFLOP/s")
PY
