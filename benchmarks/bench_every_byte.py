"""Every byte back, on files from common writers: how many are model-coded (rebuilt byte for byte)
and how many stored, and whether `bbans decompress` gives every file back identically.

    python benchmarks/bench_every_byte.py --data-dir ../shared/data --digits 100 --cifar 50

Writers: Pillow (default, level 9, optimize), libpng through imagecodecs, ImageMagick `convert`
and netpbm's `pnmtopng` when installed, optipng on Pillow's output; formats PNG, PGM/PPM, BMP,
TIFF. Also the 39 USC-SIPI photographs as shipped (`--photos`). Prints one row per writer.
"""

from __future__ import annotations

import argparse
import filecmp
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bbans.archive import extract

from bbans.archive import writer
from bbans.io import datasets as data


def _images(data_dir: str, digits: int, cifar: int) -> list[tuple[str, np.ndarray]]:
    out = []
    mn = data.load_dataset("mnist", "test", data_dir)[:digits]
    bn = data.load_dataset("binary-mnist", "test", data_dir)[:digits]
    cf = data.load_dataset("cifar10", "test", data_dir)[:cifar]
    out += [(f"grey{i:04d}", np.asarray(x).reshape(28, 28).astype(np.uint8)) for i, x in enumerate(mn)]
    out += [(f"bw{i:04d}", (np.asarray(x).reshape(28, 28) > 0)) for i, x in enumerate(bn)]
    out += [(f"rgb{i:04d}", np.asarray(x).reshape(3, 32, 32).transpose(1, 2, 0).astype(np.uint8)) for i, x in enumerate(cf)]
    return out


def _pil(arr) -> Image.Image:
    return Image.fromarray(arr) if arr.dtype != bool else Image.fromarray(arr).convert("1")


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None and "stand-in" not in subprocess.run(
        [tool, "-version"], capture_output=True, text=True).stdout + subprocess.run(
        [tool, "-version"], capture_output=True, text=True).stderr


def writers(have_convert: bool, have_netpbm: bool, have_optipng: bool):
    def pillow(**kw):
        def w(arr, path):
            _pil(arr).save(path.with_suffix(".png"), "PNG", **kw)
        return w

    def pillow_fmt(fmt, ext):
        def w(arr, path):
            _pil(arr).save(path.with_suffix(ext), fmt)
        return w

    def libpng(level):
        def w(arr, path):
            import imagecodecs

            a = arr.astype(np.uint8) * 255 if arr.dtype == bool else arr
            path.with_suffix(".png").write_bytes(imagecodecs.png_encode(np.ascontiguousarray(a), level=level))
        return w

    def convert(ext):
        def w(arr, path):
            buf = io.BytesIO()
            _pil(arr).save(buf, "PPM")
            subprocess.run(["convert", "ppm:-", str(path.with_suffix(ext))], input=buf.getvalue(), check=True)
        return w

    def pnmtopng(arr, path):
        buf = io.BytesIO()
        _pil(arr).save(buf, "PPM")
        png = subprocess.run(["pnmtopng"], input=buf.getvalue(), capture_output=True, check=True).stdout
        path.with_suffix(".png").write_bytes(png)

    def optipng(arr, path):
        p = path.with_suffix(".png")
        _pil(arr).save(p, "PNG")
        subprocess.run(["optipng", "-quiet", "-o2", str(p)], check=True)

    yield "Pillow PNG (default)", pillow()
    yield "Pillow PNG level 9", pillow(compress_level=9)
    yield "Pillow PNG optimize", pillow(optimize=True)
    yield "Pillow PGM/PPM/PBM", pillow_fmt("PPM", ".pnm")
    yield "Pillow BMP", pillow_fmt("BMP", ".bmp")
    yield "Pillow TIFF", pillow_fmt("TIFF", ".tif")
    yield "libpng (imagecodecs) level 6", libpng(6)
    yield "libpng (imagecodecs) level 9", libpng(9)
    if have_convert:
        yield "ImageMagick PNG", convert(".png")
        yield "ImageMagick BMP", convert(".bmp")
        yield "ImageMagick PNM", convert(".pnm")
        yield "ImageMagick TIFF", convert(".tif")
    if have_netpbm:
        yield "netpbm pnmtopng", pnmtopng
    if have_optipng:
        yield "optipng -o2", optipng


def _row(label: str, folder: Path, work: Path) -> str:
    bb = work / "a.bb"
    out = work / "out"
    t = time.process_time()
    data_, rep = writer.create([str(folder)], writer.Options())
    bb.write_bytes(data_)
    extract.extract(str(bb), str(out), force=True)
    cpu = time.process_time() - t
    names = sorted(p.name for p in folder.iterdir())
    same = sum(filecmp.cmp(folder / n, out / n, shallow=False) for n in names)
    entries = rep["entries"]
    model = sum(e["kind"] == "model" for e in entries)
    reasons: dict[str, int] = {}
    for e in entries:
        if e["kind"] == "stored":
            reasons[e.get("why", "")] = reasons.get(e.get("why", ""), 0) + 1
    why = "; ".join(f"{n}: {w}" for w, n in sorted(reasons.items(), key=lambda kv: -kv[1]))[:120]
    size_in = sum((folder / n).stat().st_size for n in names)
    shutil.rmtree(out)
    return (f"| {label} | {len(names)} | {model} | {len(names) - model} | {same}/{len(names)} | {size_in} | "
            f"{len(data_)} | {cpu:.1f} | {why} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--digits", type=int, default=100)
    ap.add_argument("--cifar", type=int, default=50)
    ap.add_argument("--photos", action="store_true", help="also the USC-SIPI photographs as shipped")
    args = ap.parse_args()
    imgs = _images(args.data_dir, args.digits, args.cifar)
    work = Path(tempfile.mkdtemp(prefix="bbans-every-byte-"))
    print("| writer | files | model-coded | stored | byte-identical | input bytes | archive bytes | CPU s | why stored |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    try:
        for label, write in writers(_have("convert"), shutil.which("pnmtopng") is not None,
                                    shutil.which("optipng") is not None):
            folder = work / "in"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            for name, arr in imgs:
                write(arr, folder / name)
            print(_row(label, folder, work), flush=True)
        if args.photos:
            photos = next(r for r in data.candidate_roots(args.data_dir) if (r / "photos").is_dir()) / "photos"
            print(_row("USC-SIPI photos as shipped", photos, work), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
