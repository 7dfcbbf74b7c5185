"""Pack CIFAR-10 small enough to travel to a lent GPU machine, and unpack it there.

The device tool carries at most 64 MiB per call with the repository, and the five training
batches are 150 MB raw. Lossless WebP of each batch as one 100x100 grid of images takes them to
about 17 MB each (4.45 bits/dim), so two batches and the test images travel with the code.

    python benchmarks/cifar_pack.py pack --data-dir ../shared/data --out .cifar --batches 1,2
    # on the device: images = cifar_pack.unpack(".cifar")  (train, test) uint8 (N, 3, 32, 32)

Every packed batch is decoded again and compared with the original before it is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

GRID = 100  # images per side of one canvas: a batch of 10,000


def _to_canvas(x: np.ndarray) -> np.ndarray:
    n = len(x)
    return x.reshape(GRID, n // GRID, 3, 32, 32).transpose(0, 3, 1, 4, 2).reshape(GRID * 32, (n // GRID) * 32, 3)


def _from_canvas(c: np.ndarray) -> np.ndarray:
    rows, cols = c.shape[0] // 32, c.shape[1] // 32
    return c.reshape(rows, 32, cols, 32, 3).transpose(0, 2, 4, 1, 3).reshape(rows * cols, 3, 32, 32)


def pack(data_dir: str, out: str, batches: list[int]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bbans.data import _find, _read_cifar_batch, CIFAR_DIR, load_dataset

    root = _find(CIFAR_DIR, data_dir, "CIFAR-10")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    for b in batches:
        x = _read_cifar_batch(root / f"data_batch_{b}")
        path = dest / f"batch_{b}.webp"
        Image.fromarray(np.ascontiguousarray(_to_canvas(x))).save(path, lossless=True, quality=100, method=4)
        if not np.array_equal(_from_canvas(np.asarray(Image.open(path).convert("RGB"))), x):
            raise SystemExit(f"{path}: WebP round trip is not exact")
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB", flush=True)
    np.save(dest / "test.npy", load_dataset("cifar10", "test", data_dir))


def unpack(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(training images of every packed batch in batch order, test images)."""
    folder = Path(folder)
    parts = sorted(folder.glob("batch_*.webp"), key=lambda p: int(p.stem.split("_")[1]))
    train = np.concatenate([_from_canvas(np.asarray(Image.open(p).convert("RGB"))) for p in parts])
    return np.ascontiguousarray(train), np.load(folder / "test.npy")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["pack"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=".cifar")
    ap.add_argument("--batches", default="1,2")
    a = ap.parse_args()
    pack(a.data_dir, a.out, [int(v) for v in a.batches.split(",")])
