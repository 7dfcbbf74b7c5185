"""Held-out images through the command line across instruction sets: compress under one kernel
set, decompress under the other, both ways, and compare every file byte for byte.

    BBANS_DATA=../shared/data python benchmarks/cross_isa.py                 # defaults below
    BBANS_DATA=../shared/data python benchmarks/cross_isa.py --n 100 --K 0

"plain" forces torch, oneDNN and MKL onto their non-vector kernels (what a machine without
AVX would run) and one thread; "native" is this machine's own kernels on two threads. Inputs
are MNIST test digits (8-bit grey and binarized, from the end of the test set) and CIFAR-10 test
images, written as PNG files; each kind goes through its default model (`--model auto` picks it
by cost, so the model is named explicitly to make sure every image is model-coded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bbans.io import datasets

PLAIN = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
         "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}
KINDS = {"grey": ("mnist", "mnist-hier"), "binary": ("binary-mnist", "binary-mnist-hier"),
         "colour": ("cifar10", "cifar10-hier")}


def env(plain: bool) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in PLAIN}
    if plain:
        e.update(PLAIN)
    else:
        e["OMP_NUM_THREADS"] = "2"
    return e


def bbans(args, plain: bool) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bbans", *map(str, args)], env=env(plain), capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"bbans {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr.strip()}")
    return time.perf_counter() - t, p.stdout


def write_images(folder: Path, kind: str, n: int) -> None:
    dataset, _ = KINDS[kind]
    x = datasets.load_dataset(dataset, "test")[-n:]
    folder.mkdir(parents=True)
    for i, img in enumerate(x):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        if kind == "binary":  # 0/1 pixels as a black-and-white image
            arr = (arr > 0).astype(np.uint8) * 255
        Image.fromarray(arr).save(folder / f"{kind}-{i:04d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="images per kind [default: 40 at K=0, 4 at K=7]")
    ap.add_argument("--K", nargs="*", type=int, default=[0, 7])
    ap.add_argument("--kinds", nargs="*", default=list(KINDS))
    args = ap.parse_args()
    print("| kind | model | images | K | made under | opened under | compress s | decompress s | exact |")
    print("| --- | --- | ---: | ---: | --- | --- | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for K in args.K:
            n = args.n or (40 if K == 0 else 4)
            for kind in args.kinds:
                src = tmp / f"{kind}-{K}"
                write_images(src, kind, n)
                for make_plain in (True, False):
                    archive = tmp / f"{kind}-{K}-{make_plain}.bb"
                    out = tmp / f"{kind}-{K}-{make_plain}-out"
                    tc, _ = bbans(["compress", src, "-o", archive, "--model", KINDS[kind][1], "--K", K, "-q"], make_plain)
                    _, info = bbans(["info", archive, "--json"], False)
                    groups = json.loads(info)["groups"]
                    if [g["tiles"] for g in groups] != [n]:
                        raise SystemExit(f"{kind}: not every image was model-coded: {groups}")
                    td, _ = bbans(["decompress", archive, "-o", out, "-q"], not make_plain)
                    same = all((out / f.name).read_bytes() == f.read_bytes() for f in src.iterdir())
                    names = ("plain", "native") if make_plain else ("native", "plain")
                    print(f"| {kind} | {KINDS[kind][1]} | {n} | {K} | {names[0]} | {names[1]} | {tc:.1f} | {td:.1f} | "
                          f"{'yes' if same else 'NO'} |", flush=True)
                    if not same:
                        raise SystemExit("a file did not come back byte for byte")


if __name__ == "__main__":
    main()
