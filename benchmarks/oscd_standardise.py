# A copy of OSCD with each date of each city standardised as Daudt et al. 2018 do
# (`I = (I - I.mean()) / I.std()` over the band set stacked: one mean and one standard
# deviation per image), written as Float32 GeoTIFFs with the same names and layout, for
# bench_oscd_train.sh with CDK_OSCD=DST. Mixed resolutions count by ground area (each
# band's pixels weighted as on the 10 m grid). cd-train-teacher --scene-norm image does the
# same inside the toolkit (over the pixels valid in both dates).
#   usage: /usr/bin/python3 benchmarks/oscd_standardise.py SRC DST B04,B03,B02
import os, sys, glob, shutil
import numpy as np
from osgeo import gdal
src, dst, bands = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
cities = open(f"{src}/train.txt").read().strip().split(",") + open(f"{src}/test.txt").read().strip().split(",")
os.makedirs(dst, exist_ok=True)
for f in ("train.txt", "test.txt"): shutil.copy(f"{src}/{f}", f"{dst}/{f}")
for c in cities:
    os.makedirs(f"{dst}/{c}", exist_ok=True)
    shutil.copy(f"{src}/{c}/cm.tif", f"{dst}/{c}/cm.tif")
    for d in ("imgs_1", "imgs_2"):
        os.makedirs(f"{dst}/{c}/{d}", exist_ok=True)
        files = {b: glob.glob(f"{src}/{c}/{d}/*_{b}.tif")[0] for b in bands}
        arrs = {b: gdal.Open(p).ReadAsArray().astype(np.float64) for b, p in files.items()}
        # weight each band by its ground area per pixel so mixed resolutions count as on the 10 m grid
        ref = arrs[bands[0]].size
        w = {b: ref / a.size for b, a in arrs.items()}
        n = sum(w[b] * a.size for b, a in arrs.items())
        mean = sum(w[b] * a.sum() for b, a in arrs.items()) / n
        var = sum(w[b] * ((a - mean) ** 2).sum() for b, a in arrs.items()) / n
        sd = np.sqrt(var)
        for b, p in files.items():
            ds = gdal.Open(p)
            out = gdal.GetDriverByName("GTiff").Create(f"{dst}/{c}/{d}/{os.path.basename(p)}", ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Float32)
            out.SetGeoTransform(ds.GetGeoTransform()); out.SetProjection(ds.GetProjection())
            out.GetRasterBand(1).WriteArray(((arrs[b] - mean) / sd).astype(np.float32))
            out = None
        print(c, d, f"mean {mean:.1f} sd {sd:.1f}", flush=True)
sys.stdout.flush(); os._exit(0)
