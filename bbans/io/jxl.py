"""JPEG-XL through imagecodecs, the conventional coder beside the models:

- JPEG files recompressed losslessly (libjxl keeps a JPEG's DCT coefficients and what it needs
  to reconstruct the file exactly), used only when a trial reconstruction gives back the very
  bytes and it is smaller than storing them;
- pixels coded losslessly (modular mode), which a rebuild recipe then turns back into the file.

A crafted stream could declare an image far larger than its bytes; both decoders read the
declared size from the codestream's size header first and refuse what the archive's limits or
its own description do not allow.
"""

from __future__ import annotations

import struct

import numpy as np

from bbans.errors import ArchiveError, MismatchError

JPEG_CODEC = "jpeg-jxl"
PIXEL_CODEC = "jxl"
# Values (pixels x channels) a stream may declare per byte of it, beyond a fixed allowance:
# real photographs' JPEGs hold under 64 per byte; far above is a decompression bomb.
VALUES_FIXED = 1 << 20
VALUES_PER_BYTE = 512


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs if imagecodecs.JPEGXL.available else None


def recompress(data: bytes) -> bytes | None:
    """A JPEG-XL stream that reconstructs exactly `data`, or None (not a JPEG libjxl can carry,
    no JPEG-XL here, or the trial reconstruction differs)."""
    ic = _imagecodecs()
    if ic is None or data[:2] != b"\xff\xd8":
        return None
    try:
        enc = ic.jpegxl_encode_jpeg(data)
        back = ic.jpegxl_decode_jpeg(enc)
    except Exception:  # libjxl refuses many valid-looking JPEGs (progressive oddities, ...): store them
        return None
    return bytes(enc) if bytes(back) == data else None


class _Bits:
    """Bits LSB first, as JPEG-XL's headers are written."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for i in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ArchiveError("JPEG-XL stream ends inside its size header")
            v |= ((self.data[byte] >> (self.pos & 7)) & 1) << i
            self.pos += 1
        return v


def _codestream(data: bytes) -> bytes:
    """The codestream: the stream itself, or the payload of its first jxlc/jxlp box."""
    if data[:2] == b"\xff\x0a":
        return data
    at = 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        head = 8
        if size == 1:
            if at + 16 > len(data):
                break
            size, head = struct.unpack(">Q", data[at + 8:at + 16])[0], 16
        end = len(data) if size == 0 else at + size
        if kind == b"jxlc":
            return data[at + head:end]
        if kind == b"jxlp":
            return data[at + head + 4:end]
        if size < head and size != 0:
            break
        at = end
    raise ArchiveError("not a JPEG-XL stream (no codestream)")


def declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) that the stream's size header declares."""
    cs = _codestream(data)
    if cs[:2] != b"\xff\x0a":
        raise ArchiveError("not a JPEG-XL codestream")
    b = _Bits(cs[2:])
    dist = (9, 13, 18, 30)

    def dim(div8: bool) -> int:
        return (b.u(5) + 1) * 8 if div8 else b.u(dist[b.u(2)]) + 1

    div8 = bool(b.u(1))
    height = dim(div8)
    ratio = b.u(3)
    ratios = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
    width = dim(div8) if ratio == 0 else height * ratios[ratio][0] // ratios[ratio][1]
    return width, height


def _decode(blob: bytes, function: str, holds: str, what: str):
    """imagecodecs' `function` on a stream whose declared size was checked; its errors named."""
    ic = _imagecodecs()
    if ic is None:
        raise MismatchError(f"this archive holds {holds} with JPEG-XL; restoring it needs imagecodecs with "
                            "JPEG-XL (pip install imagecodecs)")
    try:
        return getattr(ic, function)(blob)
    except Exception:  # whatever libjxl says of a stream the checksum vouched for
        raise ArchiveError(f"{what} is not a valid JPEG-XL stream") from None


def restore(blob: bytes, size: int) -> bytes:
    """The JPEG file back from its JPEG-XL stream; exactly `size` bytes or an error."""
    width, height = declared_size(blob)
    values = 3 * width * height
    if values > VALUES_FIXED + VALUES_PER_BYTE * len(blob):
        raise ArchiveError(f"JPEG-XL stream of {len(blob)} bytes declares {values} values")
    data = bytes(_decode(blob, "jpegxl_decode_jpeg", "a JPEG recompressed", "stored JPEG"))
    if len(data) != size:
        raise ArchiveError(f"stored JPEG decodes to {len(data)} bytes, declared {size}")
    return data


def encode_pixels(pixels: np.ndarray, effort: int) -> bytes | None:
    """Canonical pixels ((H, W) or (H, W, 3) uint8; mode 1 as 0/1) coded losslessly, checked
    by decoding; None where JPEG-XL is not here or does not give them back."""
    ic = _imagecodecs()
    if ic is None:
        return None
    try:
        enc = bytes(ic.jpegxl_encode(np.ascontiguousarray(pixels), lossless=True, effort=effort))
        back = ic.jpegxl_decode(enc)
    except Exception:  # an image libjxl will not take is simply not coded this way
        return None
    return enc if back.dtype == pixels.dtype and np.array_equal(back, pixels) else None


def decode_pixels(blob: bytes, width: int, height: int, mode: str) -> np.ndarray:
    """The canonical pixels of an image of this size and mode, from `encode_pixels`'s stream."""
    if declared_size(blob) != (width, height):
        raise ArchiveError(f"JPEG-XL stream declares {declared_size(blob)}, the entry {width}x{height}")
    pixels = np.asarray(_decode(blob, "jpegxl_decode", "an image coded", "image entry"))
    want = (height, width, 3) if mode == "RGB" else (height, width)
    if pixels.shape != want or pixels.dtype != np.uint8 or (mode == "1" and pixels.max(initial=0) > 1):
        raise ArchiveError(f"JPEG-XL stream decodes to {pixels.dtype} {pixels.shape}, not a {mode} image {width}x{height}")
    return pixels

