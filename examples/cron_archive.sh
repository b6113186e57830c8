#!/usr/bin/env bash
# A cron job over an archive folder: maps every scene pair that has no map yet.
#   ARCHIVE/<scene>/pre.tif and post.tif  ->  MAPS/<scene>.tif (+ .gpkg, .png quick look)
# Two runs never overlap (flock on MAPS/.lock: a run that finds the lock taken exits 0 and
# says so); each run logs into MAPS/logs/<time>.log; --resume skips finished scenes and
# redoes one a killed run left incomplete. Exit status for a monitor: 0 all mapped (or
# another run holds the lock), 1 some scene failed (named in the log; the others are done).
#
# crontab:  */15 * * * *  /opt/cdkit/examples/cron_archive.sh /data/archive /data/maps /data/model.cdm
# usage: examples/cron_archive.sh ARCHIVE MAPS MODEL.cdm
# Environment: CDK_BIN (folder of the programs, default: PATH).
set -uo pipefail
ARCHIVE=${1:?usage: cron_archive.sh ARCHIVE MAPS MODEL.cdm} MAPS=${2:?MAPS} MODEL=${3:?MODEL.cdm}
BIN=${CDK_BIN:+$CDK_BIN/}
mkdir -p "$MAPS/logs"
exec 9> "$MAPS/.lock"
if ! flock -n 9; then
    echo "cron_archive: another run holds $MAPS/.lock; nothing to do" >&2
    exit 0
fi
LOG=$MAPS/logs/$(date -u +%Y%m%dT%H%M%SZ).log
# The pairs of this run: every ARCHIVE/<scene> with both dates (new scenes appear here).
PAIRS=$MAPS/.pairs.csv
{
    echo "scene,pre,post"
    for d in "$ARCHIVE"/*/; do
        s=$(basename "$d")
        [ -f "$d/pre.tif" ] && [ -f "$d/post.tif" ] && echo "$s,$(cd "$d" && pwd)/pre.tif,$(cd "$d" && pwd)/post.tif"
    done
} > "$PAIRS"
"${BIN}cd-infer" --model "$MODEL" --pairs "$PAIRS" --out "$MAPS" --with-polygons --with-quicklook --resume \
    --summary "$MAPS/logs/last.json" > /dev/null 2> "$LOG"
rc=$?
echo "cron_archive: exit $rc, log $LOG" >&2
exit $rc
