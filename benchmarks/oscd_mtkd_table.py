"""Tables of benchmarks/bench_oscd_mtkd.sh: pooled change-class scores on the 10 OSCD test
cities for every model (mean and spread over seeds), the student's gain over its origin per
seed, and F1 per CAR range of the test tiles (where does the student win or lose?).

usage: oscd_mtkd_table.py OSCD DATA RUN_PREFIX SEEDS   (RUN_PREFIX + seed = one run folder)
"""
import json
import os
import re
import statistics
import sys

import numpy as np
from osgeo import gdal

gdal.UseExceptions()
oscd, data, prefix, seeds = sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4].split(",")]
TILE = 96  # test tiles for the per-CAR figures: non-overlapping, as the training tiles' size
# Partition schemes of bench_oscd_mtkd.sh: name -> (label, cd-partition folder under DATA).
SCHEMES = {"quantiles": ("quantiles", "parts_quantiles"), "quantiles2": ("2 quantiles", "parts_quantiles2"),
           "thresholds": ("0.05/0.2", "parts")}
CONTROL = "origin + same epochs, no KD"
MODELS = [("origin", "origin", "1 pass"), ("control", CONTROL, "1 pass")]
# O-P two-pass maps and students of every scheme and variant found in the run folders
# (bench_oscd_mtkd.sh's names): maps_op_SCHEME[-scratch][-teN] and
# maps_student_SCHEME[-scratch][-teN][-kdW][-klK-tT][-cwC]; the defaults first.
TOKENS = [(r"scratch", lambda: "teachers from scratch"), (r"te(\S+)", lambda v: f"teachers {v} epochs"),
          (r"kd(\S+)", lambda v: f"λ = {v}"), (r"kl(\S+)", lambda v: f"KL {v}"), (r"t(\S+)", lambda v: f"T = {v}"),
          (r"cw(\S+)", lambda v: f"change weight {v}")]


def variant_parts(tokens):
    parts = []
    for tok in tokens:
        for pattern, text in TOKENS:
            m = re.fullmatch(pattern, tok)
            if m:
                parts.append(text(*m.groups()))
                break
    return parts


def label(key):
    kind, _, rest = key.partition("_")
    scheme, *variant = rest.split("-")
    name = ("O-P two-pass, " if kind == "op" else "MTKD student, ") + SCHEMES[scheme][0]
    return (", ".join([name] + variant_parts(variant)), "2 passes" if kind == "op" else "1 pass")


def scheme_of(key):
    return key.partition("_")[2].split("-")[0]


found = set()
for s_ in seeds:
    run = f"{prefix}{s_}"
    for d in os.listdir(run) if os.path.isdir(run) else []:
        if d.startswith(("maps_op_", "maps_student_")) and scheme_of(d[5:]) in SCHEMES or \
                d.startswith("maps_control-"):
            found.add(d[5:])
for key in sorted(k for k in found if k.startswith("control-")):  # controls with the students' change weight
    MODELS.append((key, ", ".join([CONTROL] + variant_parts(key.split("-")[1:])), "1 pass"))
found = {k for k in found if not k.startswith("control-")}
order = list(SCHEMES)
for key in sorted(found, key=lambda k: (order.index(scheme_of(k)), "-" in k, k)):
    MODELS.append((key, *label(key)))


def pooled(seed, key):
    path = f"{prefix}{seed}/maps_{key}/eval.json"
    return json.load(open(path))["pooled"] if os.path.exists(path) else None


def spread(values):
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}" if len(values) > 1 else f"{mean:.3f}"


def minutes(seed, bundle):
    log = f"{prefix}{seed}/{bundle}.cdm.log.jsonl"
    return sum(json.loads(l)["seconds"] for l in open(log)) / 60 if os.path.exists(log) else 0.0


print(f"Pooled over the 10 test cities, change class; mean ± sample standard deviation over seeds {seeds}\n")
print("| model | seeds | F1 | IoU | precision | recall | mIoU | cost |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for key, name, cost in MODELS:
    runs = [p for p in (pooled(s, key) for s in seeds) if p]
    if not runs:
        continue
    col = lambda f: spread([f(r) for r in runs])
    print(f"| {name} | {len(runs)} | {col(lambda r: r['change']['f1'])} | {col(lambda r: r['change']['iou'])} | "
          f"{col(lambda r: r['change']['precision'])} | {col(lambda r: r['change']['recall'])} | "
          f"{col(lambda r: r['miou'])} | {cost} |")

print("\nPer seed: change F1 (and mIoU)\n")
print("| model | " + " | ".join(f"seed {s}" for s in seeds) + " |")
print("|---|" + "---|" * len(seeds))
for key, name, _ in MODELS:
    cells = [(lambda p: f"{p['change']['f1']:.3f} ({p['miou']:.3f})" if p else "—")(pooled(s, key)) for s in seeds]
    print(f"| {name} | " + " | ".join(cells) + " |")
print("\nTraining minutes per seed: origin, control, all teachers, all students")
for s in seeds:
    run = f"{prefix}{s}"
    logs = os.listdir(run) if os.path.isdir(run) else []
    total = lambda prefix_: sum(minutes(s, f[:-len(".cdm.log.jsonl")]) for f in logs
                                if f.startswith(prefix_) and f.endswith(".cdm.log.jsonl"))
    print(f"- seed {s}: {minutes(s, 'origin'):.1f}, {minutes(s, 'control'):.1f}, {total('teacher_'):.1f}, "
          f"{total('student_'):.1f}")

# Per CAR range: the test cities cut into 96-px tiles, each tile's reference CAR, confusion
# summed per range of each scheme.
def read(path):
    ds = gdal.Open(path)
    a = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    return a

cities = open(os.path.join(oscd, "test.txt")).read().strip().replace("\n", ",").split(",")
refs = {c: read(os.path.join(oscd, c, "cm.tif")) for c in cities}
schemes = [(sc, json.load(open(f"{data}/{folder}/summary.json"))["thresholds"])
           for sc, (_, folder) in SCHEMES.items() if os.path.exists(f"{data}/{folder}/summary.json")]


def tiles():
    for c in cities:
        ref = refs[c]
        for y in range(0, ref.shape[0], TILE):
            for x in range(0, ref.shape[1], TILE):
                yield c, y, x, ref[y:y + TILE, x:x + TILE] > 0


def per_range(seed, key, edges):
    conf = np.zeros((len(edges) + 1, 3), np.int64)  # tp, fp, fn per range
    maps = {}
    for c, y, x, ref in tiles():
        if c not in maps:
            path = f"{prefix}{seed}/maps_{key}/{c}.tif"
            if not os.path.exists(path):
                return None
            maps[c] = read(path)
        pred = maps[c][y:y + TILE, x:x + TILE]
        valid = pred != 255
        if not valid.any():
            continue
        car = (ref & valid).sum() / valid.sum()
        k = int(np.searchsorted(edges, car, side="left"))  # car <= edges[k] goes to range k
        p = (pred == 1) & valid
        conf[k] += [(p & ref).sum(), (p & ~ref).sum(), (~p & ref & valid).sum()]
    return conf


def scores(tp, fp, fn):
    nan = float("nan")
    return (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan, tp / (tp + fp) if tp + fp else nan,
            tp / (tp + fn) if tp + fn else nan)


for scheme, edges in schemes:
    keys = [k for k, _, _ in MODELS if k.startswith(("origin", "control")) or
            (k.startswith(("op_", "student_")) and scheme_of(k) == scheme)]
    if not any(pooled(s, k) for s in seeds for k in keys if k.startswith("student_")):
        continue
    bounds = [0.0] + list(edges) + [1.0]
    names = [f"{'[' if i == 0 else '('}{bounds[i]:.4g}, {bounds[i + 1]:.4g}]" for i in range(len(edges) + 1)]
    counts = np.zeros(len(names), np.int64)
    for c, y, x, ref in tiles():
        counts[int(np.searchsorted(edges, ref.mean(), side="left"))] += 1
    print(f"\nScores per CAR range of the 96-px test tiles, scheme {scheme} (thresholds {[round(e, 5) for e in edges]}); "
          f"F1 mean ± sd over the model's seeds (mean precision / recall)\n")
    print("| model | seeds | " + " | ".join(f"CAR {n}: {c} tiles" for n, c in zip(names, counts)) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for k, name, _ in MODELS:
        if k not in keys:
            continue
        rows = [[scores(*r) for r in conf] for conf in (per_range(s, k, edges) for s in seeds) if conf is not None]
        if not rows:
            continue
        cells = []
        for i in range(len(names)):
            f = [r[i][0] for r in rows if not np.isnan(r[i][0])]
            pr = [statistics.mean(v) if v else float("nan")
                  for v in ([r[i][j] for r in rows if not np.isnan(r[i][j])] for j in (1, 2))]
            cells.append(f"{spread(f)} ({pr[0]:.2f} / {pr[1]:.2f})" if f else "—")
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
sys.stdout.flush()
os._exit(0)  # GDAL's Python bindings may crash in interpreter teardown
