#!/usr/bin/python3
"""Map a scene pair with an FC-Siam-diff bundle the plain Python way (GDAL's Python bindings
+ PyTorch): the Python side of benchmarks/bench_infer.sh.

Reads both dates whole into memory with GDAL, normalises them with the bundle's statistics,
loops over windows of the same size and overlap as cd-infer (same offsets, same centre
cropping: each pixel from the window where it lies farthest from an interior border),
batches them through the model and writes the UInt8 mask (0, 1, 255 nodata) with GDAL.
The weights come from the .cdm bundle itself: its LibTorch archive loads with
torch.jit.load and maps one to one onto the Python module (benchmarks/train_speed.py's
FcSiamDiff), so both programs compute the same map.

usage: infer_speed.py MODEL.cdm PRE.tif POST.tif OUT.tif [--tile 256] [--overlap 64]
                      [--batch-size 4] [--threads 2] [--threshold 0.5] [--channels-last] [--amp]
Prints one JSON line: seconds, megapixels_per_s, windows, changed_pixels.
"""
import argparse
import io
import json
import os
import re
import struct
import sys
import time

import numpy as np
import torch
from osgeo import gdal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_speed import FcSiamDiff  # noqa: E402

gdal.UseExceptions()


def load_bundle(path):
    raw = open(path, 'rb').read()
    if raw[:8] != b'CDKMDL01':
        raise SystemExit(f"{path}: not a cdkit model bundle")
    n = struct.unpack('<Q', raw[8:16])[0]
    header = json.loads(raw[16:16 + n])
    if header['model']['arch'] != 'fc-siam-diff':
        raise SystemExit(f"{path}: this script runs fc-siam-diff only, not {header['model']['arch']}")
    archive = torch.jit.load(io.BytesIO(raw[16 + n:]), map_location='cpu')
    model = FcSiamDiff(header['model']['in_bands'], header['model']['width'])
    # lib/nn's names -> the Python module's.
    rules = [(r'^encoder\.level(\d)\.(\d+)\.conv\.', lambda m: f'enc.{int(m[1]) - 1}.{m[2]}.0.'),
             (r'^encoder\.level(\d)\.(\d+)\.bn\.', lambda m: f'enc.{int(m[1]) - 1}.{m[2]}.1.'),
             (r'^decoder\.up(\d)\.', lambda m: f'ups.{int(m[1]) - 1}.'),
             (r'^decoder\.head\.', lambda m: 'head.'),
             (r'^decoder\.dec(\d)\.(\d+)\.conv\.', lambda m: f'dec.{int(m[1]) - 1}.{m[2]}.0.'),
             (r'^decoder\.dec(\d)\.(\d+)\.bn\.', lambda m: f'dec.{int(m[1]) - 1}.{m[2]}.1.')]
    state = {}
    for name, value in list(archive.named_parameters()) + list(archive.named_buffers()):
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        state[name] = value
    model.load_state_dict(state, strict=True)
    return model.eval(), header


def offsets(size, tile, overlap):
    """cd-tile's window offsets: stride tile - overlap, the last one shifted inwards."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    xs = list(range(0, size - tile + 1, stride))
    if xs[-1] != size - tile:
        xs.append(size - tile)
    return xs


def owned(xs, w, size):
    """[lo, hi) of the pixels each window gives: the one where the pixel is most central."""
    p = np.arange(size)
    cent = np.full((len(xs), size), -1, dtype=np.int64)
    for i, x in enumerate(xs):
        d = np.full(size, 1 << 30, dtype=np.int64)
        if x > 0:
            d = np.minimum(d, p - x)
        if x + w < size:
            d = np.minimum(d, x + w - 1 - p)
        inside = (p >= x) & (p < x + w)
        cent[i, inside] = d[inside]
    owner = cent.argmax(0)  # the first on ties
    return [(int(np.argmax(owner == i)), int(size - np.argmax(owner[::-1] == i))) if (owner == i).any() else (0, 0)
            for i in range(len(xs))]


def read(path, mean, std):
    ds = gdal.Open(path)
    data = ds.ReadAsArray().astype(np.float32)
    if data.ndim == 2:
        data = data[None]
    nodata = [ds.GetRasterBand(b + 1).GetNoDataValue() for b in range(ds.RasterCount)]
    invalid = np.ones(data.shape[1:], dtype=bool)
    has = False
    for b, nd in enumerate(nodata):
        if nd is not None:
            invalid &= data[b] == nd
            has = True
    if not has:
        invalid[:] = False
    data -= np.asarray(mean, np.float32)[:, None, None]
    data /= np.asarray(std, np.float32)[:, None, None]
    data[:, invalid] = 0
    return ds, data, ~invalid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('model')
    ap.add_argument('pre')
    ap.add_argument('post')
    ap.add_argument('out')
    ap.add_argument('--tile', type=int, default=256)
    ap.add_argument('--overlap', type=int, default=64)
    ap.add_argument('--batch-size', type=int, default=4)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--threshold', type=float, default=0.5)
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--amp', action='store_true', help='bfloat16 autocast (torch.autocast on the CPU)')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, header = load_bundle(args.model)
    norm = header['normalization']
    ds, a, va = read(args.pre, norm['mean'], norm['std'])
    _, b, vb = read(args.post, norm['mean'], norm['std'])
    valid = va & vb
    h, w = valid.shape
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    tw, th = min(args.tile, w), min(args.tile, h)
    xs, ys = offsets(w, args.tile, args.overlap), offsets(h, args.tile, args.overlap)
    ox, oy = owned(xs, tw, w), owned(ys, th, h)
    prob = np.zeros((h, w), np.float32)
    jobs = [(y, x, oy[j], ox[i]) for j, y in enumerate(ys) for i, x in enumerate(xs)
            if oy[j][1] > oy[j][0] and ox[i][1] > ox[i][0] and valid[oy[j][0]:oy[j][1], ox[i][0]:ox[i][1]].any()]
    with torch.no_grad():
        for k in range(0, len(jobs), args.batch_size):
            batch = jobs[k:k + args.batch_size]
            pa = torch.from_numpy(np.stack([a[:, y:y + th, x:x + tw] for y, x, _, _ in batch]))
            pb = torch.from_numpy(np.stack([b[:, y:y + th, x:x + tw] for y, x, _, _ in batch]))
            if args.channels_last:
                pa, pb = pa.contiguous(memory_format=torch.channels_last), pb.contiguous(memory_format=torch.channels_last)
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
                logits = model(pa, pb)
            p = torch.softmax(logits.float(), 1)[:, 1].numpy()
            for n, (y, x, (y0, y1), (x0, x1)) in enumerate(batch):
                prob[y0:y1, x0:x1] = p[n, y0 - y:y1 - y, x0 - x:x1 - x]
    mask = np.where(valid, (prob >= args.threshold).astype(np.uint8), np.uint8(255))
    drv = gdal.GetDriverByName('GTiff')
    out = drv.Create(args.out, w, h, 1, gdal.GDT_Byte)
    out.SetGeoTransform(ds.GetGeoTransform())
    out.SetProjection(ds.GetProjection())
    out.GetRasterBand(1).SetNoDataValue(255)
    out.GetRasterBand(1).WriteArray(mask)
    out = None
    seconds = time.time() - t0
    print(json.dumps({'seconds': seconds, 'megapixels_per_s': w * h / 1e6 / seconds, 'windows': len(jobs),
                      'changed_pixels': int((mask == 1).sum())}))


if __name__ == '__main__':
    main()
