#!/usr/bin/env bash
# MTKD at scale on Slurm: one teacher per CAR partition as a job array, then the student
# distilled from them in a job that starts only when every teacher succeeded
# (--dependency=afterok). Prints the two job ids.
#
# usage: examples/slurm/mtkd_teachers.sh PARTS OUT [EPOCHS=20]
#   PARTS: a cd-partition folder (origin.csv, val.csv, <name>.csv per partition, summary.json)
#   OUT:   bundles land in OUT/teacher_<name>.cdm and OUT/student.cdm
# Environment: CDK_BIN (folder of the programs, default: PATH), SBATCH_OPTIONS (more sbatch
# options, e.g. "--partition=gpu --gres=gpu:1").
set -euo pipefail
PARTS=$(cd "${1:?usage: mtkd_teachers.sh PARTS OUT [EPOCHS]}" && pwd) OUT=${2:?OUT} EPOCHS=${3:-20}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
BIN=${CDK_BIN:+$CDK_BIN/}
NAMES=$(/usr/bin/python3 -c "import json,sys; print(' '.join(p['name'] for p in json.load(open(sys.argv[1]))['partitions']))" \
    "$PARTS/summary.json")
set -- $NAMES
N=$#
# Task I trains the teacher of the I-th partition.
teachers=$(sbatch --parsable ${SBATCH_OPTIONS:-} --job-name=cd-teacher --array=0-$((N - 1)) \
    --output="$OUT/teacher-%a.log" <<JOB
#!/usr/bin/env bash
set -euo pipefail
names=($NAMES)
n=\${names[\$SLURM_ARRAY_TASK_ID]}
${BIN}cd-train-teacher -q --train "$PARTS/\$n.csv" --val "$PARTS/val.csv" --arch fc-siam-diff \\
    --epochs $EPOCHS --out "$OUT/teacher_\$n.cdm" --resume > "$OUT/teacher_\$n.json"
JOB
)
list=""
for n in $NAMES; do list="$list${list:+,}$n=$OUT/teacher_$n.cdm"; done
# The student waits for every teacher; Slurm cancels it if one fails (--kill-on-invalid-dep).
student=$(sbatch --parsable ${SBATCH_OPTIONS:-} --job-name=cd-distill --dependency=afterok:"$teachers" \
    --kill-on-invalid-dep=yes --output="$OUT/student.log" <<JOB
#!/usr/bin/env bash
set -euo pipefail
${BIN}cd-distill -q --method mtkd --teachers "$list" --arch fc-siam-diff --train "$PARTS/origin.csv" \\
    --val "$PARTS/val.csv" \\
    --epochs $EPOCHS --out "$OUT/student.cdm" --resume > "$OUT/student.json"
JOB
)
echo "teachers: job $teachers (array of $N), student: job $student (after all of them)"
