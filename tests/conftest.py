"""Helpers shared by the test modules, importable as `from conftest import ...` (pytest puts
tests/ on the import path, as for tests/hostile.py), and the fixtures every module sees.

Paths: FIXTURES, FIX (the fixture data sets), TREE (the fixture input tree), REPO, SHARED
(../shared/data, the real data sets, present on some machines only). Images built byte by
byte, archives edited and re-signed, tiny untrained models standing in for the bundled ones,
and the command line run in this process (`bbans_main`) or as a real process.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# ---- paths -----------------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIX = FIXTURES / "data"  # small data sets in the official layouts (MNIST ones not the published files)
TREE = FIXTURES / "tree"  # an input tree of every kind of file the compressor routes
REPO = FIXTURES.parent.parent
SHARED = REPO.parent / "shared" / "data"  # the real data sets, where this machine has them


def needs_shared(*names: str):
    """Decorator: a slow test reading ../shared/data/NAME for each name; skipped, saying what is
    missing, where this machine lacks it."""
    missing = [n for n in names if not (SHARED / n).exists()]

    def mark(fn):
        fn = pytest.mark.slow(fn)
        return pytest.mark.skipif(bool(missing), reason=f"real data set(s) {', '.join(missing)} not under {SHARED}")(fn)

    return mark


def fixture_images(dataset: str, split: str = "test") -> np.ndarray:
    """A fixture data set's images (no md5 check: the MNIST fixtures are not the published files)."""
    from bbans.io.datasets import load_dataset

    return load_dataset(dataset, split, FIX, verify=False)


def training_data() -> tuple:
    """`bbans.training.train.run`'s `data`: the MNIST fixture's training images, no selection
    split, the binarized test images."""
    return fixture_images("mnist", "train"), None, None, fixture_images("binary-mnist", "test")


# ---- image files -----------------------------------------------------------------------------


def grey_image(h: int = 28, w: int = 28, seed: int = 0) -> Image.Image:
    """An 8-bit grey image with some structure (a ramp plus noise), so zlib has work to do."""
    rng = np.random.default_rng(seed)
    smooth = np.add.outer(np.arange(h), np.arange(w)) * 4 + rng.integers(0, 30, (h, w))
    return Image.fromarray((smooth % 256).astype(np.uint8))


def rgb_image(h: int = 20, w: int = 33, seed: int = 0) -> Image.Image:
    """An 8-bit RGB image of noise, a size no tile divides."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    """The file bytes of img saved by Pillow as fmt."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk of a PNG, in order."""
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def png_from_chunks(chunks: list[tuple[bytes, bytes]], trailer: bytes = b"") -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(t, b) for t, b in chunks) + trailer


def with_chunks(png: bytes, before_idat=(), after_idat=(), trailer: bytes = b"") -> bytes:
    """The PNG with extra (type, body) chunks around its IDAT run and bytes after IEND."""
    chunks = png_chunks(png)
    first = next(i for i, (t, _) in enumerate(chunks) if t == b"IDAT")
    last = max(i for i, (t, _) in enumerate(chunks) if t == b"IDAT")
    chunks = chunks[:first] + list(before_idat) + chunks[first:last + 1] + list(after_idat) + chunks[last + 1:]
    return png_from_chunks(chunks, trailer)


def redeflated(png: bytes, deflate, idat_size: int = 1 << 30) -> bytes:
    """The PNG with its IDAT stream re-deflated by `deflate(raw) -> bytes`, cut in idat_size chunks."""
    chunks = png_chunks(png)
    raw = zlib.decompress(b"".join(b for t, b in chunks if t == b"IDAT"))
    stream = deflate(raw)
    idats = [(b"IDAT", stream[i:i + idat_size]) for i in range(0, len(stream), idat_size)]
    first = next(i for i, (t, _) in enumerate(chunks) if t == b"IDAT")
    rest = [c for c in chunks[first:] if c[0] != b"IDAT"]
    return png_from_chunks(chunks[:first] + idats + rest)


def flushed_deflate(raw: bytes) -> bytes:
    """A deflater no zlib setting reproduces: a full flush half-way through."""
    c = zlib.compressobj(6)
    half = len(raw) // 2
    return c.compress(raw[:half]) + c.flush(zlib.Z_FULL_FLUSH) + c.compress(raw[half:]) + c.flush()


# ---- archives --------------------------------------------------------------------------------


def edit_header(data: bytes, edit) -> bytes:
    """The archive with `edit(header)` applied to its header (in place), re-signed so the
    trailing checksum holds and only the reader's own checks stand in the way."""
    from hostile import resign

    from bbans.archive import format as container

    version, header, payload = container.unpack(data)
    edit(header)
    return resign(header, payload, version)


def archive_round_trip(tmp_path: Path, files: dict[str, bytes], model: str = "mnist", **options) -> tuple[dict, dict]:
    """Write files under tmp_path/src, compress them (writer.Options(model=model, **options), the
    bundled models), extract to tmp_path/out; return (restored bytes by name, header entries by name)."""
    from bbans.archive import extract, writer
    from bbans.archive import format as container

    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    data, _ = writer.create([str(src)], writer.Options(model=model, **options))
    (tmp_path / "a.bb").write_bytes(data)
    extract.extract(str(tmp_path / "a.bb"), str(tmp_path / "out"))
    entries = {e["path"]: e for e in container.unpack(data)[1]["entries"]}
    return {n: (tmp_path / "out" / n).read_bytes() for n in files}, entries


def one_error_line(err: str) -> str:
    """Assert that stderr is the single line `bbans: error: ...` and return the message."""
    assert "Traceback" not in err, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("bbans: error: "), err
    return lines[0][len("bbans: error: "):]


# ---- the coders, both ways -------------------------------------------------------------------


def codec_round_trip(codec, x, lanes: int, seed: int = 0) -> tuple[int, object]:
    """Push x with codec onto a fresh Message, serialise, pop it back; the message must return to
    its fresh state. Returns (bits the pushed message took, what was popped)."""
    from bbans.coding.ans import Message

    msg = Message(lanes, seed=seed)
    codec.push(msg, x)
    bits = msg.bits()
    back = Message.from_bytes(msg.to_bytes(), seed=seed)
    y = codec.pop(back)
    assert back == Message(lanes, seed=seed)
    return bits, y


def engine_round_trip(model, images, mask=None, **config) -> tuple[bytes, dict, np.ndarray]:
    """engine.compress then engine.decompress with EngineConfig(**config) (decoding with the
    settings compress recorded); returns (payload, stats, decoded images)."""
    from bbans.coding import engine

    payload, stats = engine.compress(model, images, mask=mask, config=engine.EngineConfig(**config))
    out = engine.decompress(model, payload, len(images), images.shape[1:], mask=mask, config=stats["config"])
    return payload, stats, out


# ---- tiny models in place of the bundled ones --------------------------------------------------

_FAKE: dict = {}


def fake_model(name: str, seed: int = 0):
    """A small randomly initialised model of the bundled architecture of `name` (paper or
    hierarchical): codes losslessly, badly, and builds in milliseconds."""
    import torch

    from bbans.models.architecture import build_model, default_architecture

    if (name, seed) not in _FAKE:
        torch.manual_seed(seed)
        if name.endswith("-hier"):
            arch = default_architecture(name[: -len("-hier")], width=8, family="hierarchical")
            arch["latent_channels"] = 2
        else:
            arch = default_architecture(name, width=16 if name != "cifar10" else 8)
        if name == "cifar10":
            arch["blocks"] = 1
        _FAKE[name, seed] = build_model(arch).eval()
    return _FAKE[name, seed]


def fake_hash(label: str) -> str:
    """A stand-in model's content hash: hex, as archives record a prefix of it."""
    import hashlib

    return hashlib.sha256(f"fake-{label}".encode()).hexdigest()


@pytest.fixture
def fake_models(monkeypatch):
    """Every registered model "bundled" as a `fake_model` (refit and baseline encoders differ):
    `catalog.records` and `checkpoints.load_model` hand them out. Returns a dict whose "salt" is
    appended to every model hash, to stand for retrained weights."""
    from bbans.models import catalog, checkpoints, registry

    state = {"salt": ""}

    def records():
        return [{"name": n, "hash": fake_hash(n), "dataset": registry.spec(n).dataset,
                 "encoders": {"refit": {"test_bits_per_dim": 0.125 * (i + 1)},
                              "baseline": {"test_bits_per_dim": 0.25 * (i + 1)}}}
                for i, n in enumerate(registry.NAMES)]

    def load_model(name, encoder="refit", device="cpu"):
        registry.spec(name)  # an unknown name is refused as the real one refuses it
        encoder = "refit" if encoder == "auto" else encoder  # the fakes' refit figures are the lower
        model = fake_model(name, seed=0 if encoder == "refit" else 1)
        return model, {"name": name, "encoder": encoder, "dataset": registry.spec(name).dataset,
                       "hash": fake_hash(f"{name}-{encoder}{state['salt']}")}

    monkeypatch.setattr(catalog, "records", records)
    monkeypatch.setattr(checkpoints, "load_model", load_model)
    # Untrained stand-ins always cost more than storing; routing tests need them to code anyway.
    from bbans.archive import writer

    monkeypatch.setattr(writer, "CHOOSE_BY_COST", False)
    return state


@pytest.fixture
def no_models(monkeypatch):
    """No bundled model at all: every file is stored."""
    from bbans.models import catalog

    monkeypatch.setattr(catalog, "records", lambda: [])


# ---- the command line ------------------------------------------------------------------------


@pytest.fixture
def bbans_main(capsys, monkeypatch):
    """Run `bbans.cli.main` itself (its own error handling, not a copy) with the given arguments
    and return (exit code, stdout, stderr). An exception main() lets escape fails the test."""
    from bbans import cli

    monkeypatch.delenv("BBANS_TRACEBACK", raising=False)

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["bbans", *map(str, args)])
        before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        capsys.readouterr()
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def bbans_command(*args) -> list[str]:
    """The argv of `python -m bbans ARGS` in a new process."""
    return [sys.executable, "-m", "bbans", *map(str, args)]


def process_env() -> dict:
    """The environment for such a process: this checkout's bbans first, no traceback switch."""
    paths = [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    env.pop("BBANS_TRACEBACK", None)
    return env


def run_bbans_process(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m bbans ARGS` to the end; text stdout and stderr captured."""
    return subprocess.run(bbans_command(*args), capture_output=True, text=True, env=process_env(), timeout=timeout)
