"""Helpers shared by the test modules: image files built byte by byte."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def save(img: Image.Image, fmt: str, **kw) -> bytes:
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


# ---- the command line, in this process -----------------------------------------------------------

import signal  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def bbans_main(capsys, monkeypatch):
    """Run `bbans.cli.main` itself (its own error handling, not a copy) and return
    (exit code, stdout, stderr)."""
    from bbans import cli

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["bbans", *map(str, args)])
        before = signal.getsignal(signal.SIGTERM)
        capsys.readouterr()
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            signal.signal(signal.SIGTERM, before)
        out, err = capsys.readouterr()
        return code, out, err

    return run
