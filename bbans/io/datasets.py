"""Dataset loaders: MNIST idx files, binarized MNIST, CIFAR-10 python batches.

Every loader returns uint8 arrays shaped (N, C, H, W). A dataset is looked for in
`--data-dir`, then `$BBANS_DATA`, then `~/.cache/bbans`; each root may hold `mnist/*.gz` and
`cifar-10-batches-py/` (the layout of the official archives, unpacked).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

from bbans.errors import BBANSError, DataNotFoundError

DATASETS = ("mnist", "binary-mnist", "cifar10")
SPLITS = ("train", "test")

MNIST_FILES = {
    "train": "train-images-idx3-ubyte.gz",
    "test": "t10k-images-idx3-ubyte.gz",
}
# The md5s the official distribution publishes; a mismatch means a corrupt or foreign file.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
# Last 5,000 training images: the CIFAR-10 validation set used to choose checkpoints.
CIFAR_VALID = 5000

# Verified md5s are remembered per (path, size, mtime) so repeated loads skip the hash.
_verified: set[tuple[str, int, float]] = set()


class DataCorruptError(BBANSError):
    pass


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("BBANS_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path("~/.cache/bbans").expanduser())
    return roots


def _find(relative: str, data_dir, what: str) -> Path:
    roots = candidate_roots(data_dir)
    for root in roots:
        p = root / relative
        if p.exists():
            return p
    where = ", ".join(str(r) for r in roots)
    raise DataNotFoundError(
        f"{what} not found: looked for {relative} under {where}; put the official files there "
        f"(mnist/*-ubyte.gz or the unpacked {CIFAR_DIR}/ folder) or pass --data-dir / set BBANS_DATA"
    )


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify_md5(path: Path, expected: str) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key in _verified:
        return
    got = _md5(path)
    if got != expected:
        raise DataCorruptError(f"{path}: md5 {got} does not match the published {expected}; re-fetch the file")
    _verified.add(key)


def read_idx_images(path: Path) -> np.ndarray:
    """An idx3-ubyte(.gz) image file -> uint8 (N, 1, H, W)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise DataCorruptError(f"{path}: not an idx3 uint8 image file")
    n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    if len(raw) != 16 + n * h * w:
        raise DataCorruptError(f"{path}: truncated idx file ({len(raw)} bytes for {n}x{h}x{w})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w).copy()


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """uint8 (N, H, W) or (N, 1, H, W) -> gzip idx3 file (used to build test fixtures)."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), images.shape[-2], images.shape[-1])
    header = b"\x00\x00\x08\x03" + b"".join(int(v).to_bytes(4, "big") for v in images.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + images.tobytes())


def _load_mnist(split: str, data_dir, verify: bool) -> np.ndarray:
    fname = MNIST_FILES[split]
    path = _find(f"mnist/{fname}", data_dir, f"MNIST {split} images")
    if verify:
        _verify_md5(path, MNIST_MD5[fname])
    return read_idx_images(path)


def _read_cifar_batch(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    if not isinstance(d, dict) or b"data" not in d:
        raise DataCorruptError(f"{path}: not a CIFAR-10 python batch (no b'data')")
    data = np.asarray(d[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataCorruptError(f"{path}: expected uint8 (N, 3072) data, got {data.dtype} {data.shape}")
    labels = d.get(b"labels")
    if labels is not None and len(labels) != len(data):
        raise DataCorruptError(f"{path}: {len(labels)} labels for {len(data)} images")
    # Rows hold the R plane, then G, then B, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32)


def _load_cifar(split: str, data_dir) -> np.ndarray:
    # Structure is checked rather than an md5: the test batch available here is a partial copy
    # (first 1,017 images), so the official archive checksum cannot apply to it.
    root = _find(CIFAR_DIR, data_dir, "CIFAR-10")
    names = CIFAR_TRAIN if split in ("train", "train-only", "valid") else (CIFAR_TEST,)
    parts = []
    for name in names:
        p = root / name
        if not p.exists():
            raise DataNotFoundError(f"CIFAR-10 file {p} missing; put the unpacked {CIFAR_DIR}/ folder there")
        parts.append(_read_cifar_batch(p))
    data = np.concatenate(parts)
    nv = validation_size(len(data))
    if split == "train-only":
        return data[:-nv]
    if split == "valid":
        return data[-nv:]
    return data


def validation_size(n_train: int) -> int:
    """The last 5,000 training images; a fifth of a small (fixture) training set."""
    return CIFAR_VALID if n_train >= 2 * CIFAR_VALID else max(1, n_train // 5)


def binarize_test(images: np.ndarray) -> np.ndarray:
    """Reference binarization: Bernoulli(value/255) with RandomState(0) over the whole array."""
    rng = np.random.RandomState(0)
    return (rng.random_sample(images.shape) < images / 255.0).astype(np.uint8)


def dynamic_binarize(x, generator=None):
    """Fresh Bernoulli(value/255) draws for a training batch (torch uint8 in, {0,1} uint8 out)."""
    import torch

    p = x.to(torch.float32) / 255.0
    return torch.bernoulli(p, generator=generator).to(torch.uint8)


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None, verify: bool = True) -> np.ndarray:
    """uint8 (N, C, H, W) images of a data set split.

    binary-mnist: the test split is binarized once by the reference convention and returned in
    {0, 1}; the train split is returned as 8-bit grey, to be binarized afresh each epoch with
    `dynamic_binarize`. cifar10 also has "train-only" (first 45,000) and "valid" (last 5,000).
    """
    if name not in DATASETS:
        raise BBANSError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    allowed = SPLITS + (("train-only", "valid") if name == "cifar10" else ())
    if split not in allowed:
        raise BBANSError(f"unknown split {split!r} for {name}; choose one of {', '.join(allowed)}")
    if name == "cifar10":
        return _load_cifar(split, data_dir)
    images = _load_mnist(split, data_dir, verify)
    if name == "binary-mnist" and split == "test":
        return binarize_test(images)
    return images


def is_binary(name: str) -> bool:
    return name == "binary-mnist"
