#!/usr/bin/env python3
"""Export a PyTorch change model to TorchScript in the form cd-infer accepts.

cd-infer runs any TorchScript module whose forward(pre, post) takes two float tensors
[N, bands, H, W] (each date normalised as (x - mean) / std per band) and returns logits
[N, 2, H, W] (class 1 = change). The band count and normalisation are not in the file: give
them to cd-infer:

    python3 examples/export_torchscript.py model.pt
    cd-infer --model model.pt --bands 3 --mean 90,80,70 --std 30,25,20 \
             --pre pre.tif --post post.tif --out change.tif

Here the model is a small untrained example (1x1 convolutions over both dates and their
difference); put your own trained module in its place. With --probabilities SCENE OUT.f32
the script also writes its own change probabilities of SCENE (pre.tif, post.tif) as raw
float32, which tests compare with cd-infer's map.

Needs Debian's python3-torch (and python3-gdal for --probabilities).
"""
import argparse

import torch

MEAN = [90.0, 80.0, 70.0]
STD = [30.0, 25.0, 20.0]


class ChangeNet(torch.nn.Module):
    def __init__(self, bands: int = 3):
        super().__init__()
        self.a = torch.nn.Conv2d(2 * bands, 8, 1)
        self.b = torch.nn.Conv2d(8, 2, 1)

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(torch.cat([pre, post - pre], 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="TorchScript file to write (.pt)")
    ap.add_argument("--probabilities", nargs=2, metavar=("SCENE", "OUT_F32"),
                    help="also write this model's change probability of SCENE/pre.tif, post.tif")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torch.jit.script(ChangeNet().eval())
    model.save(args.out)
    print(f"wrote {args.out}: cd-infer --model {args.out} --bands 3 --mean {','.join(map(str, MEAN))} "
          f"--std {','.join(map(str, STD))} --pre PRE --post POST --out CHANGE.tif")
    if args.probabilities:
        import numpy as np
        from osgeo import gdal
        scene, out = args.probabilities
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        read = lambda p: torch.from_numpy(gdal.Open(p).ReadAsArray().astype(np.float32))[None]
        pre, post = read(scene + "/pre.tif"), read(scene + "/post.tif")
        with torch.no_grad():
            p = torch.softmax(model((pre - mean) / std, (post - mean) / std), 1)[0, 1]
        p.numpy().astype(np.float32).tofile(out)


if __name__ == "__main__":
    main()
