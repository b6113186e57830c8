#!/usr/bin/env bash
# Runs an example of examples/ on small synthetic data and checks what it promises.
# usage: tests/examples/test_examples.sh BUILD_DIR pipeline|cron|parallel|slurm|k8s
# A check whose client is not installed prints "skipped: ..." and exits 0.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
WHAT=$2
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export CDK_BIN=$BUILD/apps
TMP=$(mktemp -d)
cleanup() {
    [ "$(type -t slurm_stop)" = function ] && slurm_stop
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
B=$CDK_BIN

# N synthetic scenes of SIZE px in TMP/scenes/s<i>, a pairs CSV of them, and a tiny bundle.
scenes_and_model() {
    local n=$1 size=$2 i
    mkdir -p "$TMP/scenes"
    echo "scene,pre,post,label" > "$TMP/pairs.csv"
    for i in $(seq 1 "$n"); do
        "$B/cd-synth" -q --out "$TMP/scenes/s$i" --width "$size" --height "$size" --seed "$i" > /dev/null
        echo "s$i,scenes/s$i/pre.tif,scenes/s$i/post.tif,scenes/s$i/label.tif" >> "$TMP/pairs.csv"
    done
    "$B/cd-synth" -q --out "$TMP/train_scene" --width 128 --height 128 --seed 99 > /dev/null
    "$B/cd-tile" -q --pre "$TMP/train_scene/pre.tif" --post "$TMP/train_scene/post.tif" \
        --label "$TMP/train_scene/label.tif" --tile-size 64 --out "$TMP/tiles" > /dev/null
    "$B/cd-train-teacher" -q --train "$TMP/tiles/tiles.csv" --arch fc-siam-diff --width 4 --epochs 1 \
        --out "$TMP/model.cdm" --threads 1 > /dev/null
}

# The maps of two folders hold the same pixels (their files differ only in the command line
# each records); no temporary is left in the second.
same_maps() {
    /usr/bin/python3 - "$1" "$2" <<'PY' || fail "maps of $2 differ from $1"
import glob, os, sys
from osgeo import gdal
a, b = sys.argv[1:3]
names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(a, "*.tif")))
assert names, "no map in " + a
assert names == sorted(os.path.basename(p) for p in glob.glob(os.path.join(b, "*.tif"))), "different maps"
for n in names:
    x, y = gdal.Open(os.path.join(a, n)), gdal.Open(os.path.join(b, n))
    assert x.ReadRaster() == y.ReadRaster(), n + " differs"
    assert x.GetMetadataItem("CDK_MODEL_CRC32") == y.GetMetadataItem("CDK_MODEL_CRC32"), n
parts = [f for f in os.listdir(b) if ".part-" in f]
assert not parts, "left behind: " + " ".join(parts)
print(f"{len(names)} maps identical in every pixel")
PY
}

case $WHAT in
pipeline)
    SIZE=256 EPOCHS=2 bash "$SRC/examples/pipeline.sh" "$TMP/work" > "$TMP/out.txt"
    grep -q "pooled change F1" "$TMP/out.txt" || fail "no score: $(cat "$TMP/out.txt")"
    for f in model.cdm maps/x1.tif maps/x1.gpkg mosaic.tif mosaic.gpkg eval.json; do
        [ -s "$TMP/work/$f" ] || fail "pipeline left no $f"
    done
    cat "$TMP/out.txt"
    ;;
cron)
    scenes_and_model 3 128
    mkdir -p "$TMP/archive"
    for i in 1 2; do mkdir "$TMP/archive/s$i" && cp "$TMP/scenes/s$i/"{pre,post}.tif "$TMP/archive/s$i/"; done
    bash "$SRC/examples/cron_archive.sh" "$TMP/archive" "$TMP/maps" "$TMP/model.cdm" || fail "first run"
    [ -f "$TMP/maps/s1.tif" ] && [ -f "$TMP/maps/s2.png" ] || fail "first run mapped nothing"
    # A new scene arrives; a second run maps only it.
    mkdir "$TMP/archive/s3" && cp "$TMP/scenes/s3/"{pre,post}.tif "$TMP/archive/s3/"
    before=$(stat -c %Y "$TMP/maps/s1.tif")
    sleep 1
    bash "$SRC/examples/cron_archive.sh" "$TMP/archive" "$TMP/maps" "$TMP/model.cdm" || fail "second run"
    [ -f "$TMP/maps/s3.tif" ] || fail "the new scene was not mapped"
    [ "$(stat -c %Y "$TMP/maps/s1.tif")" = "$before" ] || fail "a finished scene was mapped again"
    /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['done']==1 and j['skipped']==2, j" \
        "$TMP/maps/logs/last.json" || fail "second run's summary"
    # While a run holds the lock, another exits 0 at once and touches nothing.
    exec 8> "$TMP/maps/.lock"
    flock -n 8
    out=$(bash "$SRC/examples/cron_archive.sh" "$TMP/archive" "$TMP/maps" "$TMP/model.cdm" 2>&1) || fail "locked run: $out"
    echo "$out" | grep -q "another run holds" || fail "locked run said: $out"
    exec 8>&-
    # A scene that cannot be mapped: exit 1 for the monitor, the others still done.
    mkdir "$TMP/archive/bad" && echo "not a raster" > "$TMP/archive/bad/pre.tif" && cp "$TMP/archive/s1/post.tif" "$TMP/archive/bad/"
    if bash "$SRC/examples/cron_archive.sh" "$TMP/archive" "$TMP/maps" "$TMP/model.cdm" 2> /dev/null; then
        fail "a failed scene gave exit 0"
    fi
    ls "$TMP/maps/logs/"*.log > /dev/null || fail "no log per run"
    grep -q "bad" "$(ls -t "$TMP/maps/logs/"*.log | head -1)" || fail "the log does not name the failed scene"
    echo "ok: cron runs map new scenes only, never overlap, and report a failed scene"
    ;;
parallel)
    command -v parallel > /dev/null || { echo "skipped: GNU parallel is not installed (apt-get install parallel)"; exit 0; }
    scenes_and_model 4 128
    (cd "$TMP" && "$B/cd-infer" -q --model model.cdm --pairs pairs.csv --out ref --threads 1 > /dev/null)
    (cd "$TMP" && bash "$SRC/examples/parallel_shards.sh" model.cdm pairs.csv maps 3 1)
    same_maps "$TMP/ref" "$TMP/maps"
    ;;
slurm)
    source "$SRC/tests/examples/slurm_cluster.sh"
    set +e
    slurm_start "$TMP/slurm"
    rc=$?
    set -e
    [ $rc -eq 2 ] && exit 0
    [ $rc -eq 0 ] || fail "no Slurm cluster"
    scenes_and_model 4 768
    (cd "$TMP" && "$B/cd-infer" -q --model model.cdm --pairs pairs.csv --out ref --threads 1 > /dev/null)
    mkdir -p "$TMP/maps"
    # The array, one task cancelled while it runs; then the same array again.
    job=$(cd "$TMP" && sbatch --parsable --array=0-3 --cpus-per-task=1 --output="$TMP/task-%a.log" \
        "$SRC/examples/slurm/infer_array.sbatch" model.cdm pairs.csv maps)
    killed=""
    for i in $(seq 1 600); do
        running=$(squeue -h -j "$job" -t RUNNING -o %i | head -1)
        if [ -n "$running" ]; then sleep 0.5; scancel "$running"; killed=$running; break; fi
        sleep 0.1
    done
    [ -n "$killed" ] || fail "no array task was seen running"
    for i in $(seq 1 300); do [ -z "$(squeue -h -j "$job")" ] && break; sleep 1; done
    [ -z "$(squeue -h -j "$job")" ] || fail "the array did not finish"
    echo "cancelled task $killed; maps after the first array: $(ls "$TMP/maps" | grep -c '\.tif$')" >&2
    (cd "$TMP" && sbatch --wait --array=0-3 --cpus-per-task=1 --output="$TMP/again-%a.log" \
        "$SRC/examples/slurm/infer_array.sbatch" model.cdm pairs.csv maps > /dev/null) || fail "resubmitted array: $(cat "$TMP"/again-*.log)"
    same_maps "$TMP/ref" "$TMP/maps"
    # MTKD at scale: a teacher per CAR partition as an array, the student after all of them.
    "$B/cd-tile" -q --pairs "$TMP/pairs.csv" --tile-size 128 --out "$TMP/mtiles" > /dev/null
    "$B/cd-partition" -q "$TMP/mtiles/tiles.csv" --out "$TMP/parts" --quantiles 2 --val-blocks 256 > /dev/null
    out=$(SBATCH_OPTIONS="--cpus-per-task=1" bash "$SRC/examples/slurm/mtkd_teachers.sh" "$TMP/parts" "$TMP/mtkd" 1)
    echo "$out" >&2
    student=$(echo "$out" | sed -n 's/.*student: job \([0-9]*\).*/\1/p')
    for i in $(seq 1 300); do [ -z "$(squeue -h -j "$student" 2> /dev/null)" ] && break; sleep 1; done
    [ -s "$TMP/mtkd/student.cdm" ] || fail "no student: $(cat "$TMP"/mtkd/*.log 2> /dev/null | tail -5)"
    echo "ok: Slurm array with a cancelled task, resubmitted, equals one process; MTKD teachers then student"
    ;;
k8s)
    /usr/bin/python3 -c "import yaml" 2> /dev/null || { echo "skipped: python3-yaml is not installed"; exit 0; }
    /usr/bin/python3 - "$SRC/examples/k8s/infer-indexed-job.yaml" <<'PY'
import sys, yaml
job = yaml.safe_load(open(sys.argv[1]))
assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed", job["kind"]
c = job["spec"]["template"]["spec"]["containers"][0]
cmd = " ".join(c["args"])
assert "--shard \"$JOB_COMPLETION_INDEX/4\"" in cmd and "--resume" in cmd, cmd
assert job["spec"]["completions"] == 4
print("ok: indexed Job manifest parses; 4 shards by JOB_COMPLETION_INDEX")
PY
    ;;
*) fail "unknown example $WHAT" ;;
esac
