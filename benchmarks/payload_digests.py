"""Digests of the archives bbans writes for fixed inputs and settings, to show that a change
of code leaves every coded byte as it was.

    python benchmarks/payload_digests.py --save before.json    # on the old code
    python benchmarks/payload_digests.py --check before.json   # on the new code: exit 1 on any change

Inputs are examples/ plus a few synthetic images (tiles with padding, mode 1, odd sizes),
copied with fixed modification times and permissions, so the archive bytes depend only on the
code, the bundled weights and this machine's arithmetic. Only the command line is used: it is
the one interface a redesign promises to keep. Per case it records the sha256 of the whole
archive (header, every payload, every stored blob) and each model group's payload size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXED_MTIME = 1_700_000_000

# (name, extra arguments): every model family and likelihood, K = 0 and K > 0, both encoders,
# masked tiles and auto routing.
CASES = [
    ("auto-K0", []),
    ("auto-K2", ["--K", "2"]),
    ("mnist-K0", ["--model", "mnist"]),
    ("mnist-K3-baseline", ["--model", "mnist", "--K", "3", "--encoder", "baseline"]),
    ("binary-mnist-K1", ["--model", "binary-mnist", "--K", "1"]),
    ("binary-mnist-hier-K1", ["--model", "binary-mnist-hier", "--K", "1"]),
    ("mnist-hier-K1", ["--model", "mnist-hier", "--K", "1"]),
    ("cifar10-K0", ["--model", "cifar10"]),
    ("cifar10-K2", ["--model", "cifar10", "--K", "2"]),
    ("cifar10-hier-K1", ["--model", "cifar10-hier", "--K", "1"]),
    ("lanes-batch", ["--lanes", "16", "--batch-size", "3"]),
    ("none", ["--model", "none"]),
]


def make_inputs(folder: Path) -> None:
    shutil.copytree(ROOT / "examples", folder, ignore=shutil.ignore_patterns("*.py", "*.md"))
    rng = np.random.RandomState(7)
    extra = folder / "synthetic"
    extra.mkdir()
    grey = (np.add.outer(np.arange(45), np.arange(61)) * 3 % 256).astype(np.uint8)
    Image.fromarray(grey, "L").save(extra / "grey-61x45.png")
    Image.fromarray((rng.rand(30, 33) > 0.6).astype(np.uint8) * 255, "L").convert("1").save(extra / "bits-33x30.png")
    rgb = np.stack([grey[:36, :20], grey[:36, 5:25][::-1], np.full((36, 20), 90, np.uint8)], axis=2)
    Image.fromarray(rgb, "RGB").save(extra / "rgb-20x36.png")
    Image.fromarray(rng.randint(0, 256, (28, 28), dtype=np.uint8), "L").save(extra / "noise-28.pgm")
    (extra / "notes.txt").write_bytes(b"not an image\n" * 10)
    for path in sorted(folder.rglob("*"), reverse=True):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def bbans(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bbans", *args], capture_output=True, text=True, cwd=ROOT)


def digests(cases) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        make_inputs(inputs)
        for name, extra in cases:
            archive = Path(tmp) / f"{name}.bb"
            t0 = time.perf_counter()
            r = bbans("compress", str(inputs), "-o", str(archive), "-q", "--device", "cpu", *extra)
            if r.returncode != 0:
                out[name] = {"error": r.stderr.strip()}
                continue
            info = json.loads(bbans("info", str(archive), "--json").stdout)
            data = archive.read_bytes()
            out[name] = {"archive_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                         "groups": [[g["model"], g["payload_bytes"]] for g in info.get("groups", [])]}
            print(f"{name:24s} {len(data):7d} B  {out[name]['archive_sha256'][:16]}  "
                  f"({time.perf_counter() - t0:.1f} s wall)", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", metavar="FILE", help="write the digests here")
    ap.add_argument("--check", metavar="FILE", help="compare with digests saved earlier; exit 1 on a difference")
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    a = ap.parse_args()
    cases = [c for c in CASES if not a.only or c[0] in a.only]
    got = digests(cases)
    if a.save:
        Path(a.save).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    if a.check:
        want = json.loads(Path(a.check).read_text())
        bad = [n for n, _ in cases if want.get(n) != got.get(n)]
        for n in bad:
            print(f"DIFFERENT {n}: was {want.get(n)}, now {got.get(n)}")
        print(f"{len(cases) - len(bad)} of {len(cases)} cases byte-identical")
        return 1 if bad else 0
    print(json.dumps(got, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
