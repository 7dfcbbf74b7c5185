"""The speed targets of the command line (issue 25), measured through `bbans` itself.

Each row runs the installed command in a child process, as a user would, and reports wall
seconds and the child's CPU seconds (user + system, from getrusage: steadier than wall time on a
shared machine), images per second of wall time, the archive's size and whether the restored
files are identical to the inputs.

    python benchmarks/bench_speed.py --data-dir ../shared/data                      # every row
    python benchmarks/bench_speed.py --digits 1000 --K 7 --threads 2 --skip-photo   # one target

Rows: binarized MNIST test digits written as 1-bit PNGs (--digits, at each --K), a 768x512
photo made of the left halves of the first two 512x512 colour photographs in photos/ (at each
--K, unless --skip-photo), and the start-up commands (`bbans --help`, `bbans info` on the
digits' archive).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bbans.io.datasets import load_dataset  # noqa: E402


def timed(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one bbans command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bbans", *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    return not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files) and all(
        filecmp.cmp(a / f, b / f, shallow=False) for f in cmp.common_files)


def round_trip(src: Path, work: Path, label: str, n: int, K: int, threads: int, coded_values: int) -> dict:
    archive = work / f"{label}-K{K}.bb"
    out = work / f"{label}-K{K}-out"
    cw, cc = timed(["compress", str(src), "-o", str(archive), "-q", "-f", "--K", str(K), "-T", str(threads)])
    dw, dc = timed(["decompress", str(archive), "-o", str(out), "-q", "-f", "-T", str(threads)])
    size = archive.stat().st_size
    row = {"input": label, "images": n, "K": K, "threads": threads, "compress_wall_s": round(cw, 2),
           "compress_cpu_s": round(cc, 2), "decompress_wall_s": round(dw, 2), "decompress_cpu_s": round(dc, 2),
           "archive_bytes": size, "bits_per_value": 8 * size / coded_values, "exact": same_tree(src, out)}
    print(f"| {label} | {n:,} | {K} | {threads} | {cw:.1f} ({cc:.1f}) | {n / cw:,.1f} | {dw:.1f} ({dc:.1f}) | "
          f"{n / dw:,.1f} | {size:,} | {row['bits_per_value']:.4f} | {'yes' if row['exact'] else 'NO'} |", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", type=int, default=1000)
    ap.add_argument("--K", type=int, nargs="+", default=[0, 7])
    ap.add_argument("--threads", type=int, default=0, help="-T of every command (0: every core)")
    ap.add_argument("--skip-photo", action="store_true")
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bbans-speed-") as tmp:
        work = Path(tmp)
        print("| input | images | K | -T | compress wall s (CPU s) | images/s | decompress wall s (CPU s) | images/s "
              "| archive bytes | bits/value | exact |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        digits = work / "digits"
        digits.mkdir()
        x = load_dataset("binary-mnist", "test", a.data_dir)[: a.digits]
        for i, im in enumerate(x):
            Image.fromarray(im[0].astype(bool)).save(digits / f"{i:05d}.png")
        for K in a.K:
            round_trip(digits, work, "binarized digits", len(x), K, a.threads, int(x[:, 0].size))
        if not a.skip_photo:
            photos = Path(a.data_dir or os.environ.get("BBANS_DATA", "../shared/data")) / "photos"
            # No colour photograph there is 768 wide: the left halves of the first two 512x512
            # colour ones side by side make a 768x512 of real pixels (nothing upscaled).
            big = [p for p in sorted(photos.iterdir())
                   if Image.open(p).mode == "RGB" and min(Image.open(p).size) >= 512][:2]
            canvas = Image.new("RGB", (768, 512))
            for i, p in enumerate(big):
                canvas.paste(Image.open(p).convert("RGB").crop((0, 0, 384, 512)), (384 * i, 0))
            photo = work / "photo"
            photo.mkdir()
            canvas.save(photo / "photo.png")
            name = " + ".join(p.name for p in big)
            for K in a.K:
                round_trip(photo, work, f"768x512 photo ({name}, left halves)", 1, K, a.threads, 768 * 512 * 3)
        help_w, help_c = timed(["--help"])
        info_w, info_c = timed(["info", str(work / f"binarized digits-K{a.K[0]}.bb")])
        print(f"\n`bbans --help`: {help_w:.2f} s wall ({help_c:.2f} CPU s); `bbans info` on the digits' archive: "
              f"{info_w:.2f} s wall ({info_c:.2f} CPU s)")


if __name__ == "__main__":
    main()
