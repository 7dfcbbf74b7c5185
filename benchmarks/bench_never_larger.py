"""Never larger (issue 22): bbans against `tar | xz -9e` and JPEG-XL per image on folders of
real files, with every entry checked against its input's size and every file restored exactly.

    python benchmarks/bench_never_larger.py --data-dir ../shared/data [--photos N] [--level 7]

Folders (built in a temporary directory, deterministically):
- "photos as found": the USC-SIPI photographs of data/photos as they are;
- "a user's folder": N of those photos re-saved by Pillow as PNG, N/2 more as JPEG (quality 90),
  50 MNIST test digits and 20 binarized ones as PNG, and a text file.
The JPEG-XL column is what a user gets from JPEG-XL alone: each PNG's pixels lossless at the same
effort, JPEGs kept as they are, every other file under xz -9e.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def build(data_dir: Path, out: Path, n_photos: int) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT))
    from bbans.io.datasets import load_dataset

    photos = sorted((data_dir / "photos").glob("*.png"))
    found = out / "photos-as-found"
    found.mkdir()
    for p in photos:
        (found / p.name).write_bytes(p.read_bytes())
    user = out / "a-users-folder"
    (user / "digits").mkdir(parents=True)
    (user / "scans").mkdir()
    for p in photos[:n_photos]:
        Image.open(p).save(user / p.name)
    for p in photos[n_photos:n_photos + n_photos // 2]:
        Image.open(p).convert("RGB" if Image.open(p).mode != "L" else "L").save(user / f"{p.stem}.jpg", quality=90)
    for i, x in enumerate(load_dataset("mnist", "test", data_dir)[:50]):
        Image.fromarray(x[0], "L").save(user / "digits" / f"{i:02d}.png")
    for i, x in enumerate(load_dataset("binary-mnist", "test", data_dir)[:20]):
        Image.fromarray((x[0] * 255).astype(np.uint8), "L").convert("1").save(user / "scans" / f"{i:02d}.png")
    (user / "README.txt").write_bytes((ROOT / "README.md").read_bytes())
    return {"photos as found": found, "a user's folder": user}


def tar_xz(folder: Path) -> int:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        t.add(folder, arcname=folder.name)
    return len(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def jxl_alone(folder: Path, effort: int) -> int:
    total = 0
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.suffix == ".png":
            total += len(imagecodecs.jpegxl_encode(np.asarray(Image.open(p).convert("L") if Image.open(p).mode == "1"
                                                             else Image.open(p)), lossless=True, effort=effort))
        elif p.suffix == ".jpg":
            total += len(data)
        else:
            total += len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    return total


def bbans(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bbans", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def same_files(a: Path, b: Path) -> bool:
    files = [p.relative_to(a) for p in a.rglob("*") if p.is_file()]
    return all((b / f).read_bytes() == (a / f).read_bytes() for f in files) and \
        len(files) == sum(1 for p in b.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--photos", type=int, default=10)
    ap.add_argument("--level", type=int, default=7)
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = build(a.data_dir, Path(tmp), a.photos)
        for name, folder in folders.items():
            files = [p for p in folder.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            archive = Path(tmp) / f"{folder.name}.bb"
            t0 = time.perf_counter()
            r = bbans("compress", folder, "-o", archive, "-q", "--level", a.level, "--device", "cpu")
            t_c = time.perf_counter() - t0
            if r.returncode:
                print(r.stderr)
                return 1
            t0 = time.perf_counter()
            d = bbans("decompress", archive, "-o", Path(tmp) / f"{folder.name}-out", "-q")
            t_d = time.perf_counter() - t0
            exact = d.returncode == 0 and same_files(folder, Path(tmp) / f"{folder.name}-out")
            info = json.loads(bbans("info", archive, "--json").stdout)
            entries = [e for e in info["entries"] if "size" in e]
            larger = [e["path"] for e in entries if e["coded_bytes"] > e["size"]]
            kinds: dict[str, int] = {}
            for e in entries:
                key = e["how"] if e["kind"] == "model" else f"{e['kind']} {e['how']}"
                kinds[key] = kinds.get(key, 0) + 1
            results[name] = {
                "files": len(files), "bytes": size, "bbans": archive.stat().st_size, "tar_xz": tar_xz(folder),
                "jpeg_xl_alone": jxl_alone(folder, a.level), "entries_larger_than_input": larger, "exact": exact,
                "compress_s": round(t_c, 1), "decompress_s": round(t_d, 1), "coders": kinds,
                "overhead_bytes": info["overhead_bytes"],
            }
    print(f"| folder | files | bytes | bbans | tar + xz -9e | JPEG-XL alone | entries larger than input | exact | compress / decompress s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['files']} | {r['bytes']:,} | **{r['bbans']:,}** | {r['tar_xz']:,} | {r['jpeg_xl_alone']:,} | "
              f"{len(r['entries_larger_than_input'])} | {'yes' if r['exact'] else 'NO'} | {r['compress_s']} / {r['decompress_s']} |")
    for name, r in results.items():
        print(f"{name}: coders {r['coders']}; header {r['overhead_bytes']} B")
    return 0 if all(r["exact"] and not r["entries_larger_than_input"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
