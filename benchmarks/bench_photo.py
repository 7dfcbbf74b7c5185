"""Colour photos of any size through the CIFAR-10 model, beside PNG, WebP and the other codecs.

    python benchmarks/bench_photo.py PHOTO.png [...] [--K 0] [--threads 1]
    python benchmarks/bench_photo.py --skimage astronaut coffee    # scikit-image's sample photos

bbans runs as a user runs it: `bbans compress` on the file (the photo is cut into 32x32 tiles,
the edge tiles padded and masked), `bbans decompress`, and the restored pixels are compared with
the original. bits/dim divides the whole .bb archive (header, checksums, payload) by
height x width x 3; "payload" is the rANS message alone. Every generic codec is decoded and
compared too.
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

from bbans import bench


def skimage_photo(name: str) -> Path:
    try:
        import skimage
    except ImportError:
        sys.exit("--skimage needs scikit-image (pip install scikit-image)")
    path = Path(skimage.__file__).parent / "data" / f"{name}.png"
    if not path.exists():
        sys.exit(f"scikit-image has no sample photo {name}.png")
    return path


def bbans_row(photo: Path, pixels: np.ndarray, K: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bb = Path(tmp) / "p.bb"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        subprocess.run(["bbans", "compress", str(photo), "-o", str(bb), "--K", str(K), "--device", "cpu", "-q"],
                       check=True, env=env)
        t1 = time.perf_counter()
        subprocess.run(["bbans", "decompress", str(bb), "-o", str(Path(tmp) / "out"), "-q"], check=True, env=env)
        t2 = time.perf_counter()
        back = np.asarray(Image.open(Path(tmp) / "out" / photo.name).convert("RGB"))
        info = json.loads(subprocess.run(["bbans", "info", str(bb), "--json"], check=True, capture_output=True,
                                         text=True).stdout)
        size = bb.stat().st_size
    dims = pixels.size
    groups = info["groups"]
    payload = sum(g["payload_bytes"] for g in groups)
    return {"codec": f"bbans ({groups[0]['model'] if groups else 'stored'}, K={K})", "bytes": size,
            "bits_per_dim": 8 * size / dims, "payload_bits_per_dim": 8 * payload / dims,
            "compress_s": t1 - t0, "decompress_s": t2 - t1, "exact": bool(np.array_equal(back, pixels))}


def generic_rows(pixels: np.ndarray) -> list[dict]:
    rows = []
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    for c in bench.image_codecs(3, False):
        if c.skipped:
            rows.append({"codec": c.name, "skipped": c.skipped})
            continue
        a = c.prepare(chw)
        t0 = time.perf_counter()
        data = c.encode(a)
        t1 = time.perf_counter()
        back = np.asarray(c.decode(data))
        t2 = time.perf_counter()
        rows.append({"codec": c.name, "settings": c.settings, "bytes": len(data), "bits_per_dim": 8 * len(data) / pixels.size,
                     "compress_s": t1 - t0, "decompress_s": t2 - t1,
                     "exact": bool(np.array_equal(back.reshape(a.shape), a))})
    raw = pixels.tobytes()
    for c in bench.byte_codecs():
        if c.skipped:
            rows.append({"codec": c.name, "skipped": c.skipped})
            continue
        t0 = time.perf_counter()
        data = c.encode(raw)
        t1 = time.perf_counter()
        back = c.decode(data)
        rows.append({"codec": c.name, "settings": c.settings, "bytes": len(data), "bits_per_dim": 8 * len(data) / pixels.size,
                     "compress_s": t1 - t0, "decompress_s": time.perf_counter() - t1, "exact": back == raw})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="*", type=Path)
    ap.add_argument("--skimage", nargs="*", default=[], metavar="NAME", help="scikit-image sample photos by name")
    ap.add_argument("--K", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    photos = list(args.photos) + [skimage_photo(n) for n in args.skimage]
    if not photos:
        ap.error("give photos or --skimage NAME")
    report = []
    for photo in photos:
        pixels = np.asarray(Image.open(photo).convert("RGB"))
        h, w, _ = pixels.shape
        rows = [bbans_row(photo, pixels, args.K, args.threads)] + generic_rows(pixels)
        report.append({"photo": photo.name, "width": w, "height": h, "rows": rows})
        print(f"\n{photo.name}: {w}x{h} RGB, {pixels.size} dims")
        print(f"  {'codec':<26}{'bits/dim':>9}{'bytes':>10}{'comp s':>9}{'decomp s':>9}  exact")
        for r in sorted(rows, key=lambda r: r.get("bits_per_dim", 99)):
            if "skipped" in r:
                print(f"  {r['codec']:<26} skipped: {r['skipped']}")
                continue
            extra = f"  (payload {r['payload_bits_per_dim']:.3f})" if "payload_bits_per_dim" in r else ""
            print(f"  {r['codec']:<26}{r['bits_per_dim']:>9.3f}{r['bytes']:>10}{r['compress_s']:>9.2f}"
                  f"{r['decompress_s']:>9.2f}  {r['exact']}{extra}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
