#!/usr/bin/env bash
# Makes the bundles of tests/data/pinned with the programs of BIN (default build/apps):
# an origin model and two CAR-partition teachers, width-2 fc-siam-diff, a few epochs on a
# 256x256 synthetic scene. They were written by commit 3fb2e80 (before the trainer and
# mapper redesign) and are kept as they were: test_pinned.cpp checks that bundles of that
# age still load and map to the same bytes. Rerun only to pin a deliberate change.
set -euo pipefail
BIN="${1:-build/apps}"
HERE="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$BIN/cd-synth" --out "$tmp/scene" --width 256 --height 256 --bands 3 --type UInt8 --seed 7 -q >/dev/null
"$BIN/cd-tile" --pre "$tmp/scene/pre.tif" --post "$tmp/scene/post.tif" --label "$tmp/scene/label.tif" \
  --tile-size 32 --out "$tmp/tiles" -q >/dev/null
"$BIN/cd-partition" "$tmp/tiles/tiles.csv" --out "$tmp/parts" --quantiles 2 --val-fraction 0.2 --seed 1 -q >/dev/null
common=(--arch fc-siam-diff --width 2 --epochs 3 --batch-size 8 --lr 5e-3 --device cpu --workers 1 --threads 1 -q)
"$BIN/cd-train-teacher" --train "$tmp/parts/origin.csv" --val "$tmp/parts/val.csv" --out "$HERE/origin.cdm" --seed 1 "${common[@]}" --overwrite >/dev/null
for p in small large; do
  "$BIN/cd-train-teacher" --train "$tmp/parts/$p.csv" --val "$tmp/parts/val.csv" --out "$HERE/$p.cdm" --seed 2 "${common[@]}" --overwrite >/dev/null
done
rm -f "$HERE"/*.log.jsonl

# A TorchScript model from Python (Debian's python3-torch): forward(pre, post) -> logits,
# 3x3 convolutions so that windows and their overlaps matter.
cat > "$tmp/export.py" <<'PY'
import sys, torch
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.b = torch.nn.Conv2d(6, 2, 3, padding=1)
    def forward(self, pre, post):
        return self.b(torch.relu(self.a(torch.cat([pre, post - pre], 1))))
torch.manual_seed(0)
torch.jit.script(M().eval()).save(sys.argv[1])
PY
/usr/bin/python3 "$tmp/export.py" "$HERE/model.pt"  # torch.jit.script reads the source file
ls -l "$HERE"
