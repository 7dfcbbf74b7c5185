"""The bytes of a format-5 header: JSON values in a compact typed encoding (docs/FORMAT.md).

A small archive's header is mostly hashes, times and names, which JSON spells in two to three
times their bytes (16 hex digits for an 8-byte checksum, 19 decimal digits for a time), plus
key names. Here a value is a tag byte and its bytes: small integers are the tag itself, other
integers varints, strings that are lowercase hex their bytes, key names and common values one
byte from frozen tables. `loads(dumps(v)) == v` for every JSON value the writer makes, and
`loads` refuses bytes that are not one value (ArchiveError): unknown tags, keys out of table
order or repeated, bytes after the value, counts larger than the bytes left, nesting deeper
than MAX_DEPTH. A value may be spelt in more than one way (a listed word as a plain string);
the trailing checksum, not the encoding, makes an archive's bytes unique.

The tables are part of the format: names may be appended in a later format, never changed.
"""

from __future__ import annotations

import math
import re

from bbans.errors import ArchiveError

# Key names, in the order a dict's keys are written (those not listed follow, by name). Keys
# whose values rarely change come first, so a small header's variable bytes sit together.
KEYS = (
    "format", "created_by", "bbans", "device", "groups", "model", "encoder", "engine",
    "K", "arithmetic", "batch_size", "batches", "batch_ks", "collapsed", "dtype", "lanes", "lr",
    "obs_prec", "prior_prec", "q_prec", "seed", "threads", "masked", "tiles", "coded_dims",
    "versions", "numpy", "torch", "fingerprint", "machine", "cpu_capability", "cuda",
    "payload", "offset", "length", "phantom_peak", "neg_elbo_bits", "model_hash",
    "frames", "codec", "dict_size", "zlib_version",
    "entry_count", "entry_columns", "kind", "perm", "group", "image", "mode", "width",
    "height", "meta", "rebuild", "bare", "split", "frame", "idat", "rule", "filters", "zlib",
    "header", "level", "mem", "strategy", "wbits", "layout", "stride", "bottom_up", "data",
    "why", "target", "pixels_sha256", "est_bits", "size", "sha256", "path", "mtime_ns",
)
# Common string values.
WORDS = (
    "model", "stored", "image", "dir", "symlink", "png", "raster", "PNG", "PPM", "BMP", "TIFF",
    "JPEG", "1", "L", "RGB", "BGR", "1;I", "jxl", "lzma2", "raw", "jpeg-jxl", "pillow", "libpng",
    "cpu", "cuda", "float64", "float32", "exact-1", "float", "refit", "baseline",
    "binary-mnist-hier", "binary-mnist", "mnist-hier", "mnist", "cifar10-hier", "cifar10",
    "not an image", "x86_64", "AVX2", "AVX512", "DEFAULT", "0.1.0",
)
_KEY_INDEX = {k: i for i, k in enumerate(KEYS)}
_WORD_INDEX = {w: i for i, w in enumerate(WORDS)}

# Tag bytes: 0x00-0x7F are the integers 0..127 themselves.
SMALL_INT = 0x80
NULL, FALSE, TRUE, UINT, NEGINT, FLOAT, STR, HEX, LIST, DICT, WORD = range(0x80, 0x8B)
MAX_DEPTH = 32
_HEX_RE = re.compile(r"^(?:[0-9a-f]{2})+$")
_FLOAT_RE = re.compile(rb"^-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?$")


def varint(n: int) -> bytes:
    """n >= 0 in 7-bit groups, low first, the top bit set on all but the last byte."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(data, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at data[pos]: IndexError where the data ends
    inside it, ValueError where it has more than 64 bits or padding bytes."""
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        if shift > 63 or (shift == 63 and b > 1) or (b == 0 and shift):
            raise ValueError("malformed varint")
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, pos


def _key_order(key: str) -> tuple[int, str]:
    return (_KEY_INDEX.get(key, len(KEYS)), key)


def _text(s: str) -> bytes:
    # Names keep their undecodable bytes as lone surrogates (schema.check_name); they round-trip.
    return s.encode("utf-8", "surrogatepass")


def dumps(value) -> bytes:
    out = bytearray()
    _dump(value, out, 0)
    return bytes(out)


def _dump(v, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("header nested too deeply")
    if v is None:
        out.append(NULL)
    elif v is True or v is False:
        out.append(TRUE if v else FALSE)
    elif isinstance(v, int):
        if not -(1 << 64) <= v < 1 << 64:
            raise ValueError("a header integer must fit in 64 bits")
        if 0 <= v < SMALL_INT:
            out.append(v)
        elif v >= 0:
            out.append(UINT)
            out += varint(v)
        else:
            out.append(NEGINT)
            out += varint(-1 - v)
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("a header number must be finite")
        text = repr(v).encode()
        out.append(FLOAT)
        out += varint(len(text))
        out += text
    elif isinstance(v, str):
        if v in _WORD_INDEX:
            out += bytes((WORD, _WORD_INDEX[v]))
        elif _HEX_RE.match(v):
            raw = bytes.fromhex(v)
            out.append(HEX)
            out += varint(len(raw))
            out += raw
        else:
            raw = _text(v)
            out.append(STR)
            out += varint(len(raw))
            out += raw
    elif isinstance(v, list):
        out.append(LIST)
        out += varint(len(v))
        for x in v:
            _dump(x, out, depth + 1)
    elif isinstance(v, dict):
        out.append(DICT)
        out += varint(len(v))
        for k in sorted(v, key=_key_order):
            if k in _KEY_INDEX:
                out += varint(_KEY_INDEX[k] + 1)
            else:
                raw = _text(k)
                out.append(0)
                out += varint(len(raw))
                out += raw
            _dump(v[k], out, depth + 1)
    else:
        raise TypeError(f"cannot pack {type(v).__name__}")


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ArchiveError("header ends inside a value")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        try:
            n, self.pos = read_varint(self.data, self.pos)
        except IndexError:
            raise ArchiveError("header ends inside a value") from None
        except ValueError:
            raise ArchiveError("header holds a malformed number") from None
        return n

    def count(self) -> int:
        """A length or item count: each item takes at least one byte, so never more than are left."""
        n = self.varint()
        if n > len(self.data) - self.pos:
            raise ArchiveError("header declares more items than it holds")
        return n

    def take(self, n: int) -> bytes:
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return raw

    def text(self) -> str:
        try:
            return self.take(self.count()).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise ArchiveError("header holds text that is not UTF-8") from None


def loads(data: bytes):
    r = _Reader(data)
    value = _load(r, 0)
    if r.pos != len(r.data):
        raise ArchiveError("header has bytes after its end")
    return value


def _load(r: _Reader, depth: int):
    if depth > MAX_DEPTH:
        raise ArchiveError("header nested too deeply")
    t = r.byte()
    if t < SMALL_INT:
        return t
    if t == NULL:
        return None
    if t in (FALSE, TRUE):
        return t == TRUE
    if t == UINT:
        n = r.varint()
        if n < SMALL_INT:
            raise ArchiveError("header holds a non-canonical number")
        return n
    if t == NEGINT:
        return -1 - r.varint()
    if t == FLOAT:
        raw = r.take(r.count())
        if not _FLOAT_RE.match(raw):
            raise ArchiveError("header holds a malformed number")
        v = float(raw)
        if not math.isfinite(v):
            raise ArchiveError("header holds a number out of range")
        return v
    if t == STR:
        return r.text()
    if t == HEX:
        n = r.count()
        if not n:
            raise ArchiveError("header holds an empty checksum")
        return r.take(n).hex()
    if t == WORD:
        i = r.byte()
        if i >= len(WORDS):
            raise ArchiveError(f"header names unknown word {i}")
        return WORDS[i]
    if t == LIST:
        return [_load(r, depth + 1) for _ in range(r.count())]
    if t == DICT:
        out, last = {}, None
        for _ in range(r.count()):
            i = r.varint()
            if i:
                if i > len(KEYS):
                    raise ArchiveError(f"header names unknown key {i}")
                key = KEYS[i - 1]
            else:
                key = r.text()
                if key in _KEY_INDEX:
                    raise ArchiveError("header spells out a key it has a number for")
            order = _key_order(key)
            if last is not None and order <= last:
                raise ArchiveError("header keys out of order or repeated")
            last = order
            out[key] = _load(r, depth + 1)
        return out
    raise ArchiveError(f"header holds unknown tag {t:#x}")
