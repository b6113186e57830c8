#!/usr/bin/python3
"""Train FC-Siam-diff with Python PyTorch on a cd-tile manifest, as cd-train-teacher does,
and report samples per second: the Python side of benchmarks/bench_train.sh.

Same architecture as lib/nn's fc-siam-diff (Daudt et al. 2018: conv-BN-ReLU-Dropout2d(0.2)
blocks, 4 levels of w, 2w, 4w, 8w channels, transposed-conv decoder over |f1 - f2| skips),
same normalisation (dataset.json statistics), same loss (cross-entropy, 255 ignored), same
optimiser (AdamW, lr 1e-3, weight decay 1e-4), random flips, batch size and thread count
given on the command line. Tiles are read with GDAL's Python bindings in a DataLoader.

usage: train_speed.py MANIFEST --batch-size 8 --steps 60 --warmup 10 --threads 2 --workers 2
"""
import argparse
import csv
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from osgeo import gdal

gdal.UseExceptions()


def cbr(cin, cout, p=0.2):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Dropout2d(p))


class FcSiamDiff(nn.Module):
    def __init__(self, bands, w=16):
        super().__init__()
        lv = [[bands, w, w], [w, 2 * w, 2 * w], [2 * w, 4 * w, 4 * w, 4 * w], [4 * w, 8 * w, 8 * w, 8 * w]]
        self.enc = nn.ModuleList(nn.Sequential(*[cbr(c[i], c[i + 1]) for i in range(len(c) - 1)]) for c in lv)
        ch = [w, 2 * w, 4 * w, 8 * w]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1) for c in ch)
        dec = []
        for l, c in enumerate(ch):
            if l >= 2:
                dec.append(nn.Sequential(cbr(2 * c, c), cbr(c, c), cbr(c, c // 2)))
            elif l == 1:
                dec.append(nn.Sequential(cbr(2 * c, c), cbr(c, c // 2)))
            else:
                dec.append(nn.Sequential(cbr(2 * c, c)))
        self.dec = nn.ModuleList(dec)
        self.head = nn.Conv2d(w, 2, 3, padding=1)

    def encode(self, x):
        feats = []
        for level in self.enc:
            x = level(x)
            feats.append(x)
            x = F.max_pool2d(x, 2)
        return feats, x

    def forward(self, a, b):
        fa, _ = self.encode(a)
        fb, x = self.encode(b)
        skips = [torch.abs(p - q) for p, q in zip(fa, fb)]
        for l in range(3, -1, -1):
            x = self.ups[l](x)
            x = self.dec[l](torch.cat([x, skips[l]], 1))
        return self.head(x)


class Tiles(torch.utils.data.Dataset):
    def __init__(self, manifest):
        base = os.path.dirname(os.path.abspath(manifest))
        self.rows = [r for r in csv.DictReader(open(manifest))]
        self.base = base
        ds = json.load(open(os.path.join(base, "dataset.json")))
        st = ds["statistics"]["all"]
        self.mean = np.array([s["mean"] for s in st], np.float32)[:, None, None]
        self.std = np.maximum(np.array([s["std"] for s in st], np.float32), 1e-6)[:, None, None]

    def __len__(self):
        return len(self.rows)

    def read(self, rel):
        x = gdal.Open(os.path.join(self.base, rel)).ReadAsArray().astype(np.float32)
        return x[None] if x.ndim == 2 else x

    def __getitem__(self, i):
        r = self.rows[i]
        a = (self.read(r["a"]) - self.mean) / self.std
        b = (self.read(r["b"]) - self.mean) / self.std
        y = self.read(r["label"])[0].astype(np.int64)
        if np.random.rand() < 0.5:
            a, b, y = a[:, :, ::-1], b[:, :, ::-1], y[:, ::-1]
        if np.random.rand() < 0.5:
            a, b, y = a[:, ::-1], b[:, ::-1], y[::-1]
        return (torch.from_numpy(a.copy()), torch.from_numpy(b.copy()), torch.from_numpy(y.copy()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("manifest")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward pass (losses in float32)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = Tiles(a.manifest)
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch_size, shuffle=True, drop_last=True,
                                         num_workers=a.workers, persistent_workers=a.workers > 0)
    model = FcSiamDiff(data.mean.shape[0], a.width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    step, t0, samples = 0, None, 0
    while step < a.steps + a.warmup:
        for pre, post, y in loader:
            if step == a.warmup:
                t0, samples = time.perf_counter(), 0
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp):
                logits = model(pre, post)
            loss = F.cross_entropy(logits.float(), y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            samples += pre.shape[0]
            if step >= a.steps + a.warmup:
                break
    secs = time.perf_counter() - t0
    print(json.dumps({"tool": "python-pytorch", "torch": torch.__version__, "steps": a.steps,
                      "batch_size": a.batch_size, "amp": a.amp, "seconds": secs, "samples_per_s": samples / secs,
                      "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
