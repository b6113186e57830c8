"""Tables of benchmarks/bench_oscd_mtkd.sh: pooled change-class scores on the 10 OSCD test
cities for every model (mean and spread over seeds), the student's gain over its origin per
seed, and F1 per CAR range of the test tiles (where does the student win or lose?).

usage: oscd_mtkd_table.py OSCD DATA RUN_PREFIX SEEDS   (RUN_PREFIX + seed = one run folder)
"""
import json
import os
import statistics
import sys

import numpy as np
from osgeo import gdal

gdal.UseExceptions()
oscd, data, prefix, seeds = sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4].split(",")]
TILE = 96  # test tiles for the per-CAR figures: non-overlapping, as the training tiles' size
MODELS = [("origin", "origin", "1 pass"), ("control", "origin + same epochs, no KD", "1 pass"),
          ("op_quantiles", "O-P two-pass, quantiles", "2 passes"), ("student_quantiles", "MTKD student, quantiles", "1 pass"),
          ("op_thresholds", "O-P two-pass, 0.05/0.2", "2 passes"), ("student_thresholds", "MTKD student, 0.05/0.2", "1 pass")]
# Students distilled with other weights (bench_oscd_mtkd.sh with CDK_KD_WEIGHT, CDK_KD_KL,
# CDK_KD_T): maps_student_SCHEME-kdW[-klK-tT].
NAMES = {"kd": "λ = ", "kl": "KL ", "t": "T = "}
for s_ in seeds:
    run = f"{prefix}{s_}"
    for d in sorted(os.listdir(run)) if os.path.isdir(run) else []:
        if d.startswith("maps_student_") and "-kd" in d and not any(m[0] == d[5:] for m in MODELS):
            scheme, _, variant = d[len("maps_student_"):].partition("-")
            label = "0.05/0.2" if scheme == "thresholds" else scheme
            parts = [next(NAMES[k] + p[len(k):] for k in NAMES if p.startswith(k)) for p in variant.split("-")]
            MODELS.append((d[5:], f"MTKD student, {label}, " + ", ".join(parts), "1 pass"))
STUDENTS = [k for k, _, _ in MODELS if k.startswith("student_")]


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

print("\nPer seed: change F1 (and mIoU) of the origin, the control and the students\n")
names_of = {k: n for k, n, _ in MODELS}
print("| seed | origin | control | " + " | ".join(names_of[k].replace("MTKD student", "student") for k in STUDENTS) +
      " | training minutes (origin, control, teachers, students) |")
print("|---:|---|---|" + "---|" * len(STUDENTS) + "---|")
for s in seeds:
    cells = []
    for key in ["origin", "control"] + STUDENTS:
        p = pooled(s, key)
        cells.append(f"{p['change']['f1']:.3f} ({p['miou']:.3f})" if p else "—")
    teach = sum(minutes(s, f"teacher_{sc}_{p}") for sc in ("quantiles", "thresholds") for p in ("small", "medium", "large"))
    stud = sum(minutes(s, k) for k in STUDENTS)
    print(f"| {s} | " + " | ".join(cells) + f" | {minutes(s, 'origin'):.1f}, {minutes(s, 'control'):.1f}, "
          f"{teach:.1f}, {stud:.1f} |")

# Per CAR range: the test cities cut into 96-px tiles, each tile's reference CAR, confusion
# summed per range of each scheme.
def read(path):
    ds = gdal.Open(path)
    a = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    return a

cities = open(os.path.join(oscd, "test.txt")).read().strip().replace("\n", ",").split(",")
refs = {c: read(os.path.join(oscd, c, "cm.tif")) for c in cities}
schemes = [("quantiles", json.load(open(f"{data}/parts_quantiles/summary.json"))["thresholds"]),
           ("thresholds", json.load(open(f"{data}/parts/summary.json"))["thresholds"])]


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
    student = f"student_{scheme}"
    if not any(pooled(s, student) for s in seeds):
        continue
    bounds = [0.0] + list(edges) + [1.0]
    names = [f"{'[' if i == 0 else '('}{bounds[i]:.4g}, {bounds[i + 1]:.4g}]" for i in range(len(edges) + 1)]
    counts = np.zeros(len(names), np.int64)
    for c, y, x, ref in tiles():
        counts[int(np.searchsorted(edges, ref.mean(), side="left"))] += 1
    print(f"\nScores per CAR range of the 96-px test tiles, scheme {scheme} (thresholds {[round(e, 5) for e in edges]}); "
          f"tiles per range {counts.tolist()}; F1 mean ± sd over the seeds with a student, "
          "(mean precision / recall)\n")
    keys = [k for k, _, _ in MODELS if k in ("origin", "control", f"op_{scheme}") or k.startswith(student)]
    print("| CAR range | " + " | ".join(n for k, n, _ in MODELS if k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    rows = {k: [] for k in keys}
    for s in seeds:
        if not pooled(s, student):
            continue
        for k in keys:
            conf = per_range(s, k, edges)
            if conf is not None:
                rows[k].append([scores(*r) for r in conf])
    for i, n in enumerate(names):
        cells = []
        for k in keys:
            f = [r[i][0] for r in rows[k] if not np.isnan(r[i][0])]
            pr = [statistics.mean(v) if v else float("nan")
                  for v in ([r[i][j] for r in rows[k] if not np.isnan(r[i][j])] for j in (1, 2))]
            cells.append(f"{spread(f)} ({pr[0]:.2f} / {pr[1]:.2f})" if f else "—")
        print(f"| {n} | " + " | ".join(cells) + " |")
sys.stdout.flush()
os._exit(0)  # GDAL's Python bindings may crash in interpreter teardown
