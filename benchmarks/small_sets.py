"""Archives of a few files: bbans beside xz and tar | xz, and how far one digit's archive is from
its -ELBO.

    python benchmarks/small_sets.py [--data-dir ../shared/data] [--counts 1 10 100 1000]

Rows: the first N binarized MNIST test digits written as 1-bit PNGs (as bench_speed.py writes
them), and the README's examples/ folder. Each archive is decoded back and compared file by
file. For a model-coded archive, "over -ELBO" is its size less the group's -ELBO in bytes (the
bits the model says the pixels need): what the container, the header, the lane heads and the
first image's borrowed bits cost together.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bbans.archive import format as container  # noqa: E402
from bbans.io.datasets import load_dataset  # noqa: E402


def bbans(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bbans", *args, "-q"], check=True, cwd=ROOT)


def xz_size(folder: Path) -> int:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if len(files) == 1:
        return len(subprocess.run(["xz", "-9e", "-c", str(files[0])], capture_output=True, check=True).stdout)
    tar = subprocess.run(["tar", "cf", "-", "-C", str(folder), "."], capture_output=True, check=True).stdout
    return len(subprocess.run(["xz", "-9e", "-c"], input=tar, capture_output=True, check=True).stdout)


def same(a: Path, b: Path) -> bool:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    return names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def row(label: str, folder: Path, work: Path) -> str:
    bb = work / f"{label.strip('/')}.bb"
    bbans("compress", str(folder), "-o", str(bb), "-f")
    out = work / f"{label.strip('/')}.out"
    bbans("decompress", str(bb), "-o", str(out), "-f")
    data = bb.read_bytes()
    with container.Reader(data) as r:
        coders = sorted({e["kind"] if e["kind"] != "model" else r.groups[e["group"]]["model"]
                         for e in r.entries if e["kind"] in container.FILE_KINDS})
        elbo = sum(g.get("neg_elbo_bits", 0) for g in r.groups) / 8
        overhead = r.overhead
    files = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    over = f"{len(data) - elbo:,.1f} B (-ELBO {elbo:.1f} B)" if r.groups else "-"
    return (f"| {label} | {files:,} | **{len(data):,}** | {overhead:,} | {over} | {', '.join(coders)} | "
            f"{xz_size(folder):,} | {'yes' if same(folder, out) else 'NO'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("BBANS_DATA", "../shared/data"))
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100, 1000])
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    try:
        x = load_dataset("binary-mnist", "test", a.data_dir)[: max(a.counts)]
        print("| input | file bytes | bbans | container + header | over -ELBO | coders | xz -9e (one file) or tar + xz -9e | exact |")
        print("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        for n in a.counts:
            folder = work / f"d{n}"
            folder.mkdir()
            for i, im in enumerate(x[:n]):
                Image.fromarray(im[0].astype(bool)).save(folder / f"{i:05d}.png")
            print(row(f"{n} binarized digit(s)", folder, work), flush=True)
        print(row("examples/", ROOT / "examples", work), flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
