#!/usr/bin/env bash
# The HiCD benchmark's tooling, without training anything: benchmarks/bench_oscd_hicd.sh run
# with stub programs (each records its arguments and writes what it was asked to) on a fake
# OSCD tree, then benchmarks/oscd_hicd_table.py on what it left. Checks that each model gets
# the cd-distill / cd-train-teacher flags its documentation promises, that a bad model name
# fails, that a rerun maps and degrades nothing twice, and the table's means and differences.
# usage: tests/bench/test_bench_hicd.sh
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
PY=$(command -v python3) || { echo "skipped: python3 is not installed"; exit 0; }

# A fake OSCD: two training and two test cities, one empty file per band and date.
OSCD=$TMP/oscd
for c in ta tb xa xb; do
    for d in 1 2; do mkdir -p "$OSCD/$c/imgs_$d"; for b in B02 B03 B04; do : > "$OSCD/$c/imgs_$d/S2_$b.tif"; done; done
    : > "$OSCD/$c/cm.tif"
done
echo "ta,tb" > "$OSCD/train.txt"
echo "xa,xb" > "$OSCD/test.txt"

# Stubs: every call is logged as one line "PROGRAM ARGS..."; outputs are created empty, and
# cd-eval answers with an F1 that depends on the map folder's path (so the table has numbers to sum).
STUB=$TMP/bin
mkdir -p "$STUB"
cat > "$STUB/stub" <<'EOF'
#!/usr/bin/env bash
prog=$(basename "$0")
echo "$prog $*" >> "$CALLS"
out=""; pairs=""; prev=""
for a in "$@"; do
    case $prev in --out) out=$a ;; --pairs) pairs=$a ;; esac
    prev=$a
done
case $prog in
    cd-tile) mkdir -p "$out"; : > "$out/tiles.csv"; echo '{}' ;;
    cd-partition) mkdir -p "$out"; echo '{"partitions": []}' > "$out/summary.json"; : > "$out/origin.csv"; : > "$out/val.csv" ;;
    cd-train-teacher|cd-distill) : > "$out"; echo '{"best_epoch": 1}' ;;
    cd-degrade|cd-infer) : > "$out"; echo '{}' ;;
    gdalbuildvrt) for a in "$@"; do case $a in *.vrt) : > "$a"; break ;; esac; done ;;
    cd-eval)
        dir=$(dirname "$pairs")
        f1=$(printf '%s' "$dir" | cksum | awk '{printf "0.%03d", $1 % 1000}')
        echo "{\"pooled\": {\"change\": {\"f1\": $f1, \"iou\": 0.1, \"precision\": 0.2, \"recall\": 0.3}}}" ;;
esac
EOF
chmod +x "$STUB/stub"
for p in cd-tile cd-partition cd-train-teacher cd-distill cd-degrade cd-infer cd-eval gdalbuildvrt; do
    ln -s stub "$STUB/$p"
done
export PATH=$STUB:$PATH CDK_BIN=$STUB CDK_OSCD=$OSCD CDK_BENCH_DIR=$TMP/bench CALLS=$TMP/calls.txt
bench() { bash "$SRC/benchmarks/bench_oscd_hicd.sh" "$@"; }

# One run with every kind of model.
: > "$CALLS"
bench fc-siam-diff rgb res=4 0 20 10 "direct hicd feature_mse self global hicd-w10 hicd-w2.5 clean" > "$TMP/table.md" 2> "$TMP/log.txt" \
    || { cat "$TMP/log.txt" >&2; fail "bench_oscd_hicd.sh failed with stub programs"; }
RUN=$TMP/bench/fc-siam-diff-rgb-s0

call() {  # PROGRAM OUT-NAME: the one logged call of PROGRAM that wrote RUN/OUT-NAME
    local lines
    lines=$(grep "^$1 .*--out $RUN/$2\( \|$\)" "$CALLS" || true)
    [ -n "$lines" ] || fail "no $1 call wrote $2"
    [ "$(echo "$lines" | wc -l)" -eq 1 ] || fail "$1 wrote $2 more than once"
    echo " $lines "
}
has() {  # CALL FLAG...: CALL holds the flags in this order, next to each other
    case $1 in *" $2 "*) ;; *) fail "'$2' missing in: $1" ;; esac
}
weights() {  # CALL SELF CROSS GLOBAL
    has "$1" "--hicd-self $2 --hicd-cross $3 --hicd-global $4"
}
no() {  # CALL TEXT: CALL does not hold TEXT
    case $1 in *" $2 "*) fail "'$2' should not be in: $1" ;; esac
}

t=$(call cd-train-teacher teacher.cdm)
has "$t" "--arch fc-siam-diff --epochs 20 --lr 1e-3"; no "$t" "--degrade"; no "$t" "--init"
d=$(call cd-train-teacher direct-res_4.cdm)
has "$d" "--epochs 10 --lr 5e-4 --schedule constant --degrade res=4"; has "$d" "--init $RUN/teacher.cdm"
c=$(call cd-train-teacher clean.cdm)
has "$c" "--init $RUN/teacher.cdm"; no "$c" "--degrade"
h=$(call cd-distill hicd-res_4.cdm)
has "$h" "--method hicd"; has "$h" "--degrade res=4"; has "$h" "--teacher $RUN/teacher.cdm"
has "$h" "--student-init $RUN/teacher.cdm"; no "$h" "--hicd-self"; no "$h" "--feature-mse"
f=$(call cd-distill feature_mse-res_4.cdm)
weights "$f" 0 0 0; has "$f" "--feature-mse 1"
weights "$(call cd-distill self-res_4.cdm)" 1 0 0
weights "$(call cd-distill global-res_4.cdm)" 0 0 1
weights "$(call cd-distill hicd-w10-res_4.cdm)" 10 10 10
weights "$(call cd-distill hicd-w2.5-res_4.cdm)" 2.5 2.5 2.5
for s in 1 2; do
    grep -q "^cd-degrade .*--out $TMP/bench/test-rgb-res_4/x[ab].tif --degrade res=4 --seed $s" "$CALLS" \
        || fail "a test city's date 2 was not degraded with seed $s"
done
# Every model mapped: degraded pairs for all but the clean ones.
for m in teacher-res_4 direct-res_4 hicd-res_4 feature_mse-res_4 self-res_4 global-res_4 hicd-w10-res_4 \
         hicd-w2.5-res_4 teacher-clean clean; do
    [ -f "$RUN/maps-$m/eval.json" ] || fail "no scores for $m"
done
grep -q "^cd-infer .*--post $TMP/bench/test-rgb-res_4/xa-2.vrt .*--out $RUN/maps-clean/xa.tif" "$CALLS" \
    || fail "(e') was not mapped on clean pairs"
grep -q "^cd-infer .*--post $TMP/bench/test-rgb-res_4/xa.tif .*--out $RUN/maps-hicd-res_4/xa.tif" "$CALLS" \
    || fail "(d) was not mapped on degraded pairs"
for row in "(d) HiCD student" "(d) HiCD, correlation weights 2.5" "(d) global correlation only" "(e') fine-tuned"; do
    grep -qF "| $row" "$TMP/table.md" || fail "the run's table lacks '$row'"
done

# Reruns resume: every training call carries --resume (the real programs then skip a
# finished model), and finished maps are not mapped again.
grep "^cd-\(train-teacher\|distill\) " "$CALLS" | grep -v -- " --resume " && fail "a training call without --resume"
: > "$CALLS"
bench fc-siam-diff rgb res=4 0 20 10 "direct hicd" > /dev/null 2>&1 || fail "the rerun failed"
grep -q "^cd-infer " "$CALLS" && fail "the rerun mapped a city again"
grep -q "^cd-degrade " "$CALLS" && fail "the rerun degraded a city again"

# Bad model names fail, with a message naming the model.
: > "$CALLS"
bench fc-siam-diff rgb res=4 0 20 10 "hicd-wx" > /dev/null 2> "$TMP/err.txt" && fail "model 'hicd-wx' was accepted"
grep -q "bad weight in model 'hicd-wx'" "$TMP/err.txt" || fail "no message for 'hicd-wx': $(cat "$TMP/err.txt")"
bench fc-siam-diff rgb res=4 0 20 10 "nonsense" > /dev/null 2> "$TMP/err.txt" && fail "model 'nonsense' was accepted"
grep -q "unknown model 'nonsense'" "$TMP/err.txt" || fail "no message for 'nonsense'"

# The three-seed table: seed 1 holds only (b) and (d); seed counts, means and per-seed
# differences match the scores.
bench fc-siam-diff rgb res=4 1 20 10 "direct hicd" > /dev/null 2>&1 || fail "seed 1 failed"
"$PY" "$SRC/benchmarks/oscd_hicd_table.py" --root "$TMP/bench" fc-siam-diff rgb res=4 > "$TMP/three.md"
"$PY" - "$TMP/three.md" "$TMP/bench/fc-siam-diff-rgb-s0" "$TMP/bench/fc-siam-diff-rgb-s1" <<'PY' || fail "the table's figures"
import json, re, sys
table, s0, s1 = sys.argv[1:4]
text = open(table).read()
f1 = lambda run, m: json.load(open(f"{run}/maps-{m}/eval.json"))["pooled"]["change"]["f1"]
rows = {m.group(1): m for m in re.finditer(r"^\| (.+?) \| (\d) \| ([0-9.]+)", text, re.M)}
assert rows["(d) HiCD student"].group(2) == "2", "HiCD should have 2 seeds"
assert rows["(d) HiCD, correlation weights 10"].group(2) == "1", "hicd-w10 ran in seed 0 only"
assert rows["(d) HiCD, correlation weights 2.5"].group(2) == "1", "hicd-w2.5 ran in seed 0 only"
mean_d = (f1(s0, "hicd-res_4") + f1(s1, "hicd-res_4")) / 2
assert abs(float(rows["(d) HiCD student"].group(3)) - mean_d) < 0.0006, (rows["(d) HiCD student"].group(3), mean_d)
diffs = [f1(s, "hicd-res_4") - f1(s, "direct-res_4") for s in (s0, s1)]
line = re.search(r"^\(d\) − \(b\) in F1 per seed: (.*); mean ([-+][0-9.]+)", text, re.M)
assert line, "no per-seed difference line"
assert [float(x) for x in line.group(1).split(", ")] == [round(x, 3) for x in diffs], (line.group(1), diffs)
PY
echo "bench_oscd_hicd.sh and oscd_hicd_table.py: flags, rerun and table checked"
