#!/usr/bin/env python3
"""Three-seed table of bench_oscd_hicd.sh runs: mean and range of the pooled change-class F1,
IoU, precision and recall per model, and how (d) HiCD stands against (b) seed by seed.

  usage: benchmarks/oscd_hicd_table.py [--root DIR] ARCH BANDSET SPEC [SEEDS=0,1,2]
  e.g.   benchmarks/oscd_hicd_table.py fc-siam-diff rgb res=4

Reads ROOT/ARCH-BANDSET-sSEED/maps-*/eval.json (ROOT: $CDK_BENCH_DIR or
/tmp/cdk-bench-oscd-hicd); a model missing in a seed is left out of that row's mean and the
row says how many seeds it has."""
import argparse, json, os, re, statistics

LABELS = [  # (key, label, map folder with {tag} for the setting's tag)
    ("a", "(a) teacher, degraded test pairs", "teacher-{tag}"),
    ("b", "(b) fine-tuned on degraded pairs", "direct-{tag}"),
    ("c", "(c) feature-MSE distillation", "feature_mse-{tag}"),
    ("d", "(d) HiCD student", "hicd-{tag}"),
    ("self", "(d) self-correlation only", "self-{tag}"),
    ("cross", "(d) cross-correlation only", "cross-{tag}"),
    ("global", "(d) global correlation only", "global-{tag}"),
]
CEILINGS = [
    ("e", "(e) teacher, clean test pairs", "teacher-clean"),
    ("e'", "(e') fine-tuned on clean pairs, clean test pairs", "clean"),
]
METRICS = ("f1", "iou", "precision", "recall")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.environ.get("CDK_BENCH_DIR", "/tmp/cdk-bench-oscd-hicd"))
    ap.add_argument("arch")
    ap.add_argument("bandset")
    ap.add_argument("spec")
    ap.add_argument("seeds", nargs="?", default="0,1,2")
    a = ap.parse_args()
    tag = a.spec.translate(str.maketrans(",=:%@", "_____"))
    seeds = [int(s) for s in a.seeds.split(",")]

    def run_dir(seed):
        return os.path.join(a.root, f"{a.arch}-{a.bandset}-s{seed}")

    def load(seed, folder):
        path = os.path.join(run_dir(seed), "maps-" + folder.format(tag=tag), "eval.json")
        if not os.path.exists(path):
            return None
        return json.load(open(path))["pooled"]["change"]

    print(f"{a.arch}, {a.bandset}, date 2 degraded by {a.spec}; seeds {a.seeds}; pooled over the 10 OSCD "
          "test cities; mean (min–max)\n")
    print("| model | seeds | F1 | IoU | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    # hicd-wW runs (every correlation weight W), whichever weights were run in any seed
    weights = set()
    for seed in seeds:
        run = run_dir(seed)
        for name in os.listdir(run) if os.path.isdir(run) else []:
            m = re.fullmatch(r"maps-hicd-w([0-9]+(?:\.[0-9]+)?)-" + re.escape(tag), name)
            if m:
                weights.add(m.group(1))
    rows = LABELS + [(f"w{w}", f"(d) HiCD, correlation weights {w}", f"hicd-w{w}-{{tag}}")
                     for w in sorted(weights, key=float)] + CEILINGS
    per_seed = {}
    for key, label, folder in rows:
        runs = {s: load(s, folder) for s in seeds}
        runs = {s: r for s, r in runs.items() if r is not None}
        if not runs:
            continue
        per_seed[key] = {s: r["f1"] for s, r in runs.items()}
        cells = []
        for m in METRICS:
            v = [r[m] for r in runs.values()]
            cells.append(f"{statistics.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})" if len(v) > 1 else f"{v[0]:.3f}")
        print(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    b, d = per_seed.get("b"), per_seed.get("d")
    if b and d:
        common = sorted(set(b) & set(d))
        diffs = [d[s] - b[s] for s in common]
        print(f"\n(d) − (b) in F1 per seed: " + ", ".join(f"{x:+.3f}" for x in diffs) +
              f"; mean {statistics.mean(diffs):+.3f}; (d) above (b) in {sum(x >= 0.0005 for x in diffs)} of "
              f"{len(diffs)}, level (within 0.0005) in {sum(abs(x) < 0.0005 for x in diffs)}")
        for ceiling in ("e", "e'"):
            e = per_seed.get(ceiling)
            if not e:
                continue
            both = sorted(set(common) & set(e))
            if not both:
                continue
            gap = statistics.mean(e[s] - b[s] for s in both)
            got = statistics.mean(d[s] - b[s] for s in both)
            share = ("no gap: (b) is at or above the ceiling" if gap <= 0 else
                     "(d) is below (b)" if got < 0 else f"{got / gap:.0%} of it")
            print(f"gap from (b) to ({ceiling}): {gap:+.3f} on average; (d) closes {got:+.3f} ({share})")


if __name__ == "__main__":
    main()
