#!/usr/bin/env bash
# Inference speed and memory: cd-infer against (a) the FLOP-bound limit on this machine and
# (b) a plain Python mapper (benchmarks/infer_speed.py: GDAL's Python bindings + PyTorch,
# whole scene read at once, same windows, same weights), side by side in one run, on
# synthetic pairs of SIZE/2 and SIZE pixels square (4x the pixels), tiled GeoTIFFs.
#   usage: benchmarks/bench_infer.sh [SIZE=8192] [THREADS=2]   (after scripts/build.sh)
# Needs Debian's python3-torch and python3-gdal (scripts/setup.sh installs them).
# Scenes and models are kept in $CDK_BENCH_DIR (default /tmp/cdk-bench-infer) between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/machine.sh
ROOT=$PWD
BIN=$ROOT/build/apps
SIZE=${1:-8192}
THREADS=${2:-2}
HALF=$((SIZE / 2))
WORK=${CDK_BENCH_DIR:-/tmp/cdk-bench-infer}
mkdir -p "$WORK"
/usr/bin/python3 -c 'import torch' 2>/dev/null || { echo "skipped: python3-torch is not installed" >&2; exit 0; }

# Scenes: 3 bands, UInt8, tiled (as COGs and most archives are).
for s in "$HALF" "$SIZE"; do
    [ -f "$WORK/s$s/post.tif" ] || "$BIN/cd-synth" -q --out "$WORK/s$s" --width "$s" --height "$s" --bands 3 \
        --seed 11 --co TILED=YES --overwrite > /dev/null
done
# Models: one epoch on a 1024x1024 scene's 256-px tiles (weights do not change the speed,
# but a trained model gives a map worth comparing between the two programs).
if [ ! -f "$WORK/resnet-fpn.cdm" ]; then
    "$BIN/cd-synth" -q --out "$WORK/train" --width 1024 --height 1024 --bands 3 --seed 5 --overwrite > /dev/null
    "$BIN/cd-tile" -q --pre "$WORK/train/pre.tif" --post "$WORK/train/post.tif" --label "$WORK/train/label.tif" \
        --tile-size 256 --out "$WORK/tiles" --overwrite > /dev/null
    "$BIN/cd-train-teacher" -q --train "$WORK/tiles/tiles.csv" --arch fc-siam-diff --width 16 --epochs 1 \
        --batch-size 4 --threads "$THREADS" --out "$WORK/fc-siam-diff.cdm" --overwrite > /dev/null
    "$BIN/cd-train-teacher" -q --train "$WORK/tiles/tiles.csv" --arch resnet-fpn --width 32 --epochs 1 \
        --batch-size 4 --threads "$THREADS" --out "$WORK/resnet-fpn.cdm" --overwrite > /dev/null
fi
# FLOPs per 256x256 pair, as counted by lib/nn (docs/models.md).
"$ROOT/build/tests/cdk_nn_tests" "[model-table]" > "$WORK/models.md"

# The convolution throughput of this machine: 3x3 convolutions of the shapes these models
# use (batch 4, both memory formats), through the same LibTorch (python3-torch links
# Debian's libtorch); the best one is the rate the FLOP-bound limit assumes.
# With AVX-512 the same is measured in bfloat16 (the FLOP-bound limit of the --amp rows).
AMP=0
cpu_has_bf16 && AMP=1
/usr/bin/python3 - "$THREADS" "$AMP" > "$WORK/conv.json" <<'PY'
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
result = {}
with torch.no_grad():
    for dtype in (torch.float32, torch.bfloat16) if sys.argv[2] == "1" else (torch.float32,):
        best, rows = 0.0, []
        for cin, cout, hw in ((16, 16, 256), (32, 32, 128), (64, 64, 64), (128, 128, 32), (256, 256, 16)):
            for cl in (False, True):
                conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).eval().to(dtype)
                x = torch.randn(4, cin, hw, hw).to(dtype)
                if cl:
                    conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
                conv(x)
                n, t = 0, time.perf_counter()
                while time.perf_counter() - t < 1.0:
                    conv(x); n += 1
                g = 2 * 4 * cout * hw * hw * cin * 9 * n / (time.perf_counter() - t) / 1e9
                rows.append({"cin": cin, "cout": cout, "hw": hw, "channels_last": cl, "gflops": g})
                best = max(best, g)
        key = "" if dtype == torch.float32 else "bf16_"
        result[key + "best_gflops"], result[key + "convs"] = best, rows
print(json.dumps(result))
PY

# The same shapes through oneDNN called directly, as cd-infer's inference form runs them
# (lib/nn/src/onednn.hpp), direct algorithm; the limit takes the faster of the two paths.
# Then with the inference form's Winograd (float32, 64+ channels): fewer multiplications,
# so its "GFLOP/s" count the direct algorithm's FLOPs; reported, not used for the limit.
CDK_ONEDNN_WINOGRAD=0 CDK_THREADS=$THREADS "$ROOT/build/tests/cdk_nn_tests" "[conv-throughput]" | grep '^{' \
    > "$WORK/conv-onednn.json" || echo '{}' > "$WORK/conv-onednn.json"
CDK_THREADS=$THREADS "$ROOT/build/tests/cdk_nn_tests" "[conv-throughput]" | grep '^{' \
    > "$WORK/conv-onednn-winograd.json" || echo '{}' > "$WORK/conv-onednn-winograd.json"

run() {  # NAME COMMAND...: time and peak RSS of one run
    local name=$1; shift
    echo "$name ..." >&2
    /usr/bin/time -f '%M %e' -o "$WORK/$name.rss" "$@" > "$WORK/$name.json"
}
for s in "$HALF" "$SIZE"; do
    scene=(--pre "$WORK/s$s/pre.tif" --post "$WORK/s$s/post.tif")
    run "cpp-fcsd-$s" "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" "${scene[@]}" --out "$WORK/cpp-fcsd-$s.tif" \
        --threads "$THREADS" --overwrite
    # The layers as trained (batch norm not folded, transposed convolutions): what folding gains.
    run "cpp-fcsd-nofold-$s" "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" "${scene[@]}" \
        --out "$WORK/cpp-fcsd-nofold-$s.tif" --threads "$THREADS" --no-fold --overwrite
    # Every convolution through LibTorch instead of oneDNN directly: what that path gains.
    run "cpp-fcsd-torchconv-$s" env CDK_ONEDNN=0 "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" "${scene[@]}" \
        --out "$WORK/cpp-fcsd-torchconv-$s.tif" --threads "$THREADS" --overwrite
    run "py-fcsd-$s" /usr/bin/python3 benchmarks/infer_speed.py "$WORK/fc-siam-diff.cdm" "$WORK/s$s/pre.tif" \
        "$WORK/s$s/post.tif" "$WORK/py-fcsd-$s.tif" --threads "$THREADS" --channels-last
    # The Python mapper with cd-infer's own window plan (like for like), and cd-infer with the
    # plain script's (the bundle's 256-px tiles, batch 4: cd-infer's default before the
    # automatic plan).
    plan=$(/usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["window"], j["overlap"], j["batch"])' \
        "$WORK/cpp-fcsd-$s.json")
    read -r pw po pb <<< "$plan"
    run "py-fcsd-plan-$s" /usr/bin/python3 benchmarks/infer_speed.py "$WORK/fc-siam-diff.cdm" "$WORK/s$s/pre.tif" \
        "$WORK/s$s/post.tif" "$WORK/py-fcsd-plan-$s.tif" --threads "$THREADS" --channels-last \
        --tile "$pw" --overlap "$po" --batch-size "$pb"
    run "cpp-fcsd-w256-$s" "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" "${scene[@]}" \
        --out "$WORK/cpp-fcsd-w256-$s.tif" --threads "$THREADS" --tile-size 256 --batch-size 4 --overwrite
    run "cpp-rfpn-$s" "$BIN/cd-infer" -q --model "$WORK/resnet-fpn.cdm" "${scene[@]}" --out "$WORK/cpp-rfpn-$s.tif" \
        --threads "$THREADS" --overwrite
    run "cpp-rfpn-w256-$s" "$BIN/cd-infer" -q --model "$WORK/resnet-fpn.cdm" "${scene[@]}" \
        --out "$WORK/cpp-rfpn-w256-$s.tif" --threads "$THREADS" --tile-size 256 --batch-size 4 --overwrite
    if [ "$AMP" = 1 ]; then  # bfloat16 mixed precision, both programs
        run "cpp-fcsd-amp-$s" "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" "${scene[@]}" \
            --out "$WORK/cpp-fcsd-amp-$s.tif" --threads "$THREADS" --amp --overwrite
        run "cpp-fcsd-amp-torchconv-$s" env CDK_ONEDNN=0 "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" \
            "${scene[@]}" --out "$WORK/cpp-fcsd-amp-torchconv-$s.tif" --threads "$THREADS" --amp --overwrite
        run "py-fcsd-amp-$s" /usr/bin/python3 benchmarks/infer_speed.py "$WORK/fc-siam-diff.cdm" "$WORK/s$s/pre.tif" \
            "$WORK/s$s/post.tif" "$WORK/py-fcsd-amp-$s.tif" --threads "$THREADS" --channels-last --amp
        run "cpp-rfpn-amp-$s" "$BIN/cd-infer" -q --model "$WORK/resnet-fpn.cdm" "${scene[@]}" \
            --out "$WORK/cpp-rfpn-amp-$s.tif" --threads "$THREADS" --amp --overwrite
    fi
done
# Column strips: the same scene with a --ram too small for one full-width strip.
run "cpp-fcsd-$SIZE-strips" "$BIN/cd-infer" -q --model "$WORK/fc-siam-diff.cdm" --pre "$WORK/s$SIZE/pre.tif" \
    --post "$WORK/s$SIZE/post.tif" --out "$WORK/cpp-fcsd-$SIZE-strips.tif" --threads "$THREADS" --ram 48 --overwrite

/usr/bin/python3 - "$WORK" "$HALF" "$SIZE" "$THREADS" "$AMP" "$(cpu_label)" <<'PY'
import json, re, sys
import numpy as np
from osgeo import gdal
work, half, size, threads, amp, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1", sys.argv[6]
flops = {}
for line in open(f"{work}/models.md"):
    m = re.match(r"\| `([a-z-]+)` \| (\d+) \| \d+ \| \d+ \| ([\d.]+) \|", line)
    if m:
        flops[(m[1], int(m[2]))] = float(m[3]) * 1e9 / (256 * 256)  # per pixel
conv_json = json.load(open(f"{work}/conv.json"))
dnnl_json = json.load(open(f"{work}/conv-onednn.json"))
conv_torch, conv_dnnl = conv_json["best_gflops"] * 1e9, dnnl_json.get("best_gflops", 0) * 1e9
bf16_torch, bf16_dnnl = conv_json.get("bf16_best_gflops", 0) * 1e9, dnnl_json.get("bf16_best_gflops", 0) * 1e9
conv, conv_bf16 = max(conv_torch, conv_dnnl), max(bf16_torch, bf16_dnnl)
wino = json.load(open(f"{work}/conv-onednn-winograd.json")).get("best_gflops", 0)
def rss(name):
    kb, secs = open(f"{work}/{name}.rss").read().split()[-2:]
    return int(kb) / 1024, float(secs)
def mask(name):
    return gdal.Open(f"{work}/{name}.tif").ReadAsArray()
plans = "; ".join(f"{s}²: {p['window']} px, overlap {p['overlap']}, batch {p['batch']}"
                  for s in (half, size) for p in [json.load(open(f"{work}/cpp-fcsd-{s}.json"))])
print(f"Synthetic 3-band UInt8 pairs, tiled GeoTIFF; cd-infer's default windows (chosen per scene: {plans});"
      f" the plain Python mapper and the 'windows 256' rows: 256 px, overlap 64, batch 4 (the bundles' tile size);"
      f" {threads} threads, CPU"
      f" ({cpu}); convolution throughput {conv / 1e9:.0f} GFLOP/s float32"
      + (f", {conv_bf16 / 1e9:.0f} GFLOP/s bfloat16 (the limit of the --amp rows)" if amp else "")
      + " (best 3x3 convolution, benchmarks/bench_infer.sh; through LibTorch"
      f" {conv_torch / 1e9:.0f}" + (f" / {bf16_torch / 1e9:.0f}" if amp else "")
      + f", through oneDNN directly {conv_dnnl / 1e9:.0f}" + (f" / {bf16_dnnl / 1e9:.0f}" if amp else "")
      + f"; float32 with the inference form's Winograd at 64+ channels {wino:.0f} GFLOP/s of direct-algorithm FLOPs,"
      " not used for the limit)\n")
print("| program | model | scene | seconds | Mpx/s | FLOP-bound Mpx/s | share of limit | model busy | peak RSS (MiB) |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
rows = {}
for s in (half, size):
    runs = [(f"cpp-fcsd-{s}", "cd-infer", "fc-siam-diff", 16),
            (f"cpp-fcsd-nofold-{s}", "cd-infer --no-fold", "fc-siam-diff", 16),
            (f"cpp-fcsd-torchconv-{s}", "cd-infer, CDK_ONEDNN=0", "fc-siam-diff", 16),
            (f"py-fcsd-{s}", "Python + GDAL", "fc-siam-diff", 16),
            (f"py-fcsd-plan-{s}", "Python + GDAL, cd-infer's windows", "fc-siam-diff", 16),
            (f"cpp-fcsd-w256-{s}", "cd-infer, windows 256", "fc-siam-diff", 16),
            (f"cpp-rfpn-{s}", "cd-infer", "resnet-fpn", 32),
            (f"cpp-rfpn-w256-{s}", "cd-infer, windows 256", "resnet-fpn", 32)]
    if amp:
        runs += [(f"cpp-fcsd-amp-{s}", "cd-infer --amp", "fc-siam-diff", 16),
                 (f"cpp-fcsd-amp-torchconv-{s}", "cd-infer --amp, CDK_ONEDNN=0", "fc-siam-diff", 16),
                 (f"py-fcsd-amp-{s}", "Python + GDAL, autocast bfloat16", "fc-siam-diff", 16),
                 (f"cpp-rfpn-amp-{s}", "cd-infer --amp", "resnet-fpn", 32)]
    for name, prog, arch, width in runs:
        mib, wall = rss(name)
        out = json.load(open(f"{work}/{name}.json"))
        mpx = s * s / 1e6 / wall  # whole process: start, model load, reading and writing included
        limit = (conv_bf16 if "amp" in name else conv) / flops[(arch, width)] / 1e6
        busy = f"{out['seconds_model'] / out['seconds']:.0%}" if "seconds_model" in out else "-"
        rows[name] = (wall, mib, mpx)
        print(f"| {prog} | {arch} {width} | {s}² | {wall:.1f} | {mpx:.3f} | {limit:.3f} | {mpx / limit:.0%} | {busy} | {mib:.0f} |")
mib, wall = rss(f"cpp-fcsd-{size}-strips")
strips = json.load(open(f"{work}/cpp-fcsd-{size}-strips.json"))
ns = strips['strips']
print(f"| cd-infer --ram 48 ({ns} column {'strip' if ns == 1 else 'strips'}) | fc-siam-diff 16 | {size}² | {wall:.1f} | "
      f"{size * size / 1e6 / wall:.3f} | | | | {mib:.0f} |")
print()
for s in (half, size):
    c, p = rows[f"cpp-fcsd-{s}"], rows[f"py-fcsd-{s}"]
    n = rows[f"cpp-fcsd-nofold-{s}"]
    t = rows[f"cpp-fcsd-torchconv-{s}"]
    pp, w256, r, r256 = rows[f"py-fcsd-plan-{s}"], rows[f"cpp-fcsd-w256-{s}"], rows[f"cpp-rfpn-{s}"], rows[f"cpp-rfpn-w256-{s}"]
    print(f"{s}²: cd-infer / Python speed {p[0] / c[0]:.2f}x (--no-fold {p[0] / n[0]:.2f}x, "
          f"CDK_ONEDNN=0 {p[0] / t[0]:.2f}x), memory {c[1]:.0f} vs {p[1]:.0f} MiB;"
          f" like for like (both with cd-infer's windows) {pp[0] / c[0]:.2f}x, (both with 256-px windows)"
          f" {p[0] / w256[0]:.2f}x; cd-infer's windows / 256-px windows: FC-Siam-diff {w256[0] / c[0]:.2f}x faster,"
          f" ResNet-FPN {r256[0] / r[0]:.2f}x")
    if amp:
        a, pa, pf = rows[f"cpp-fcsd-amp-{s}"], rows[f"py-fcsd-amp-{s}"], rows[f"cpp-fcsd-{s}"]
        at = rows[f"cpp-fcsd-amp-torchconv-{s}"]
        print(f"{s}² bfloat16: cd-infer --amp / Python autocast {pa[0] / a[0]:.2f}x, / plain Python {p[0] / a[0]:.2f}x,"
              f" / cd-infer float32 {pf[0] / a[0]:.2f}x (CDK_ONEDNN=0: / Python autocast {pa[0] / at[0]:.2f}x);"
              f" memory {a[1]:.0f} vs {pa[1]:.0f} MiB")
for prog, key in (("cd-infer fc-siam-diff", "cpp-fcsd"), ("Python fc-siam-diff", "py-fcsd"), ("cd-infer resnet-fpn", "cpp-rfpn")):
    print(f"{prog}: peak memory {rows[f'{key}-{size}'][1] / rows[f'{key}-{half}'][1]:.2f}x for 4x the scene")
for s in (half, size):
    a, b, n = mask(f"cpp-fcsd-{s}"), mask(f"py-fcsd-{s}"), mask(f"cpp-fcsd-nofold-{s}")
    pp, w256 = mask(f"py-fcsd-plan-{s}"), mask(f"cpp-fcsd-w256-{s}")
    print(f"{s}² masks, cd-infer vs Python with its windows: {(a != pp).sum()} of {a.size} pixels differ "
          f"(with 256-px windows both: {(w256 != b).sum()}; --no-fold vs Python with cd-infer's windows: {(n != pp).sum()};"
          f" folded vs not: {(a != n).sum()}; CDK_ONEDNN=0 vs oneDNN: {(mask(f'cpp-fcsd-torchconv-{s}') != a).sum()});"
          f" cd-infer's windows vs 256-px windows: FC-Siam-diff {(a != w256).sum()},"
          f" ResNet-FPN {(mask(f'cpp-rfpn-{s}') != mask(f'cpp-rfpn-w256-{s}')).sum()}")
    if amp:
        f, c, q = mask(f"cpp-fcsd-{s}"), mask(f"cpp-fcsd-amp-{s}"), mask(f"py-fcsd-amp-{s}")
        print(f"{s}² masks, cd-infer --amp vs float32: {(c != f).sum()} pixels differ (Python autocast vs float32:"
              f" {(q != f).sum()}; ResNet-FPN --amp vs float32: {(mask(f'cpp-rfpn-amp-{s}') != mask(f'cpp-rfpn-{s}')).sum()})")
a, b = mask(f"cpp-fcsd-{size}"), mask(f"cpp-fcsd-{size}-strips")
print(f"{size}² masks, one strip vs {ns} {'strip' if ns == 1 else 'strips'}: {(a != b).sum()} pixels differ")
PY
