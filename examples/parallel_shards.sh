#!/usr/bin/env bash
# GNU parallel over shards of a scene list: N processes, each mapping scenes I, I+N, ...
# (cd-infer --shard I/N), each with THREADS threads. A rerun with --resume finishes what a
# killed run left. The maps equal a single-process run's (tests/examples check it).
#
# usage: examples/parallel_shards.sh MODEL.cdm PAIRS.csv OUT [N=2] [THREADS=1]
# Environment: CDK_BIN (folder of the programs, default: PATH).
set -euo pipefail
MODEL=${1:?usage: parallel_shards.sh MODEL.cdm PAIRS.csv OUT [N] [THREADS]} PAIRS=${2:?PAIRS.csv} OUT=${3:?OUT}
N=${4:-2} THREADS=${5:-1}
BIN=${CDK_BIN:+$CDK_BIN/}
mkdir -p "$OUT"
seq 0 $((N - 1)) | parallel --halt soon,fail=1 --line-buffer \
    "${BIN}cd-infer" -q --model "$MODEL" --pairs "$PAIRS" --out "$OUT" --shard {}/"$N" --threads "$THREADS" \
    --resume --summary "$OUT/shard-{}.json" ">" /dev/null
