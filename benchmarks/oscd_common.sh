# Sourced by benchmarks/bench_oscd_*.sh (from the repository root): where OSCD is, its band
# sets, the training tiles, and mapping and scoring the 10 test cities.
BIN=${CDK_BIN:-$PWD/build/apps}  # CDK_BIN: binaries copied aside, so a rebuild cannot change a running benchmark
OSCD=${CDK_OSCD:-$(cd .. && pwd)/shared/data/oscd}  # CDK_OSCD: another copy of the dataset, same layout

oscd_bands() {  # rgb | all | no60m -> band pattern for cd-tile / cd-infer
  case $1 in
    rgb) echo B04,B03,B02 ;;
    all) echo B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B10,B11,B12 ;;
    no60m) echo B02,B03,B04,B05,B06,B07,B08,B8A,B11,B12 ;;  # the 10 m and 20 m bands
    *) echo "BANDSET must be rgb, all or no60m, not '$1'" >&2; return 2 ;;
  esac
}

# oscd_mtkd_prefix ROOT ARCH WIDTH BANDSET EPOCHS: bench_oscd_mtkd.sh's run folders, one per
# seed (prefix + seed); an origin of other than 10 epochs gets its own (-oeN).
oscd_mtkd_prefix() {
  echo "$1/mtkd-$2-w$3-$4$([ "$5" = 10 ] || echo "-oe$5")-s"
}

oscd_partition_names() {  # $1 = a cd-partition folder: its partitions' names in CAR order
  /usr/bin/python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(open(sys.argv[1]))["partitions"]))' "$1/summary.json"
}

oscd_pairs_csv() {  # $1 = list file (train.txt | test.txt): scene,pre,post,label per city
  echo "scene,pre,post,label"
  for city in $(tr ',' ' ' < "$OSCD/$1"); do
    echo "$city,$OSCD/$city/imgs_1,$OSCD/$city/imgs_2,$OSCD/$city/cm.tif"
  done
}

# oscd_tiles DATA BANDS TILE OVERLAP: tiles of the 14 training cities in DATA/tiles and the
# default partition (the paper's thresholds, 10 % validation per partition) in DATA/parts,
# unless DATA/parts/summary.json is there already.
oscd_tiles() {
  local data=$1 bands=$2 tile=$3 overlap=$4
  [ -f "$data/parts/summary.json" ] && return 0
  rm -rf "$data"; mkdir -p "$data"
  oscd_pairs_csv train.txt > "$data/train_pairs.csv"
  "$BIN/cd-tile" -q --pairs "$data/train_pairs.csv" --band-pattern "$bands" --tile-size "$tile" \
      --overlap "$overlap" --out "$data/tiles" > "$data/tile.json"
  "$BIN/cd-partition" -q "$data/tiles/tiles.csv" --out "$data/parts" --val-fraction 0.1 --seed 0 > /dev/null
}

# oscd_map_test RUN BANDS MODEL-OPTIONS...: cd-infer on the 10 test cities into RUN/CITY.tif
# (maps already there are kept), then cd-eval --pairs into RUN/eval.json.
oscd_map_test() {
  local run=$1 bands=$2 city
  shift 2
  # The figures in docs/benchmarks.md were taken at 0.5 (cd-infer's default until it took the
  # bundle's own threshold): kept unless the caller gives one.
  case " $* " in *" --threshold "*) ;; *) set -- "$@" --threshold 0.5 ;; esac
  echo "scene,pred,ref" > "$run/eval.csv"
  for city in $(tr ',' ' ' < "$OSCD/test.txt"); do
    if [ ! -f "$run/$city.tif" ]; then
      "$BIN/cd-infer" -q "$@" --pre "$OSCD/$city/imgs_1" --post "$OSCD/$city/imgs_2" \
          --band-pattern "$bands" --out "$run/$city.tif" > "$run/$city.json"
    fi
    echo "$city,$city.tif,$OSCD/$city/cm.tif" >> "$run/eval.csv"
  done
  "$BIN/cd-eval" -q --pairs "$run/eval.csv" > "$run/eval.json"
}

oscd_city_table() {  # $1 = cd-eval JSON: one markdown row per city, the pooled row, OA/kappa/mIoU
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
print("| city | F1 | precision | recall | IoU |\n|---|---|---|---|---|")
for s in e["scenes"]:
    c = s["change"]
    print(f"| {s['scene']} | {c['f1']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} | {c['iou']:.3f} |")
c = e["pooled"]["change"]
print(f"| **pooled** | **{c['f1']:.3f}** | {c['precision']:.3f} | {c['recall']:.3f} | {c['iou']:.3f} |")
print(f"\nOA {e['pooled']['oa']:.3f}, kappa {e['pooled']['kappa']:.3f}, mIoU {e['pooled']['miou']:.3f}")
PY
}
