"""The `.bb` container (docs/FORMAT.md): preamble, compressed header, payload blobs, sha256 trailer.

`pack` builds the bytes and `unpack` takes them apart; `Reader` checks them (magic, version,
lengths, the trailing sha256, the header's schema and every entry name) before anything is
allocated or written. Stored files are LZMA2 blobs (`store` / `unstore_chunks`).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import stat
import struct
import zlib
from typing import Callable, Iterator

from bbans import __version__
from bbans.archive import header_words, packed, schema
from bbans.errors import ArchiveError, BBANSError
from bbans.io import jxl

MAGIC = b"BBANS\x00"
FORMAT_VERSION = 5  # what this bbans writes; it reads every format up to it
FILE_KINDS = ("model", "stored", "image")  # entries that are files
# Formats 1-4: magic, format version, header length (compressed), header length (raw), payload
# length; a full sha256 trails. Format 5: magic and version, then the three lengths as varints,
# and the first 8 bytes of the sha256 trail (a small archive is mostly its fixed costs).
_PREAMBLE = struct.Struct("<6sHIIQ")
_START = struct.Struct("<6sH")
PREAMBLE_SIZE = _PREAMBLE.size  # 24, formats 1-4
TRAILER_SIZE = 32
TRAILER_SIZE_5 = 8
HEADER_DICT = 1 << 20
# Per-entry checksums are the first 8 bytes of a sha256: they catch decoding that went wrong
# (the trailing full sha256 already catches corruption), and a full digest would cost more
# than the model spends on a small image.
CHECKSUM_HEX = schema.CHECKSUM_HEX
LZMA_MAX_RATIO = schema.LZMA_MAX_RATIO
LZMA_MAX_DICT = schema.LZMA_MAX_DICT
STAGING_PREFIX = schema.STAGING_PREFIX

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Warn = Callable[[str], None]


def noop_progress(stage: str, done: int, total: int) -> None:
    pass


def noop_warn(msg: str) -> None:
    pass


# ---- the container ---------------------------------------------------------------------------


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:CHECKSUM_HEX]


def _lzma_filters(dict_size: int, preset: int | None = 9 | lzma.PRESET_EXTREME) -> list[dict]:
    f = {"id": lzma.FILTER_LZMA2, "dict_size": dict_size}
    if preset is not None:
        f["preset"] = preset
    return [f]


def _dict_size_for(n: int) -> int:
    # Sized to the data: preset 9's 64 MiB dictionary costs ~100x the time on small inputs.
    size = 4096
    while size < n and size < LZMA_MAX_DICT:
        size *= 2
    return size


# ---- the header as stored (formats 4 and 5) ----------------------------------------------------
#
# From format 4 the entries are stored by column (one list per key, null where an entry lacks
# the key) and the modification times as differences from the entry before: a folder of similar
# files then costs a few bytes a file, not its keys and full times over again. The JSON is
# compressed by whichever of two codecs gives fewer bytes, named by the header's first byte:
# LZMA2 (large headers), or raw deflate primed with a fixed dictionary of typical header text
# (small ones, where LZMA2 would spend most of the bytes learning the key names). Format 5 packs
# the stored form in binary (bbans.archive.packed) instead of JSON text.

HEADER_LZMA2, HEADER_DEFLATE_DICT = 0, 1
_TIME_KEY = "mtime_ns"
_NAME_KEY = "path"


def _refs(header: dict) -> list:
    """The payload references in payload order: groups, the frames blob, entries' data."""
    groups = header.get("groups")
    refs = [g.get("payload") for g in (groups if isinstance(groups, list) else ()) if isinstance(g, dict)]
    refs.append(header.get("frames"))
    refs += [e.get("data") for e in header["entries"] if isinstance(e, dict)]
    return [r for r in refs if isinstance(r, dict)]


def _to_storage(header: dict, version: int) -> dict:
    entries = header["entries"]
    if any(v is None for e in entries for v in e.values()):
        raise BBANSError("internal error: an entry with a null field cannot be stored by column")
    keys = sorted({k for e in entries for k in e})
    columns = {k: [e.get(k) for e in entries] for k in keys}
    stored = {k: v for k, v in header.items() if k != "entries"}
    if version >= 5:
        # Format 5: blobs tile the payload area in order, so their offsets are left out.
        stored["groups"] = [{**g, "payload": _no_offset(g["payload"])} for g in header["groups"]]
        if "frames" in stored:
            stored["frames"] = _no_offset(stored["frames"])
        if "data" in columns:
            columns["data"] = [None if d is None else _no_offset(d) for d in columns["data"]]
    for k, column in columns.items():
        if version >= 5 and None not in column and all(v == column[0] for v in column):
            # Format 5: a column that holds one value for every entry is that value, not a list
            # (no entry field is a list), so one entry's table and many entries' look alike.
            columns[k] = column[0]
        elif k == _TIME_KEY:
            prev, out = 0, []
            for t in column:
                out.append(None if t is None else t - prev)
                prev = prev if t is None else t
            columns[k] = out
    if version >= 5 and isinstance(columns.get(_NAME_KEY), list):
        columns[_NAME_KEY] = _front_coded(columns[_NAME_KEY])
    stored["entry_count"] = len(entries)
    stored["entry_columns"] = columns
    return stored


def _front_coded(names: list[str]) -> list:
    """Format 5's name column: each name (sorted, so neighbours share prefixes) as `[k, rest]`,
    the first k characters of the name before it and the rest, or whole where it shares none."""
    out, prev = [], ""
    for name in names:
        k = len(os.path.commonprefix([prev, name]))
        out.append([k, name[k:]] if k else name)
        prev = name
    return out


def _names(column: list) -> list:
    """The names of a front-coded column; ArchiveError where an item is not one, or where they
    would spell out more than a header may hold."""
    out, prev, total = [], "", 0
    for item in column:
        if isinstance(item, list) and len(item) == 2 and schema.is_int(item[0], 1, len(prev)) and isinstance(item[1], str):
            name = prev[:item[0]] + item[1]
        elif isinstance(item, str):
            name = item
        else:
            raise ArchiveError("header: bad name")
        total += len(name)
        if total > schema.MAX_HEADER_JSON:
            raise ArchiveError("header: its names spell out more than a header may hold")
        out.append(name)
        prev = name
    return out


def _no_offset(ref: dict) -> dict:
    return {k: v for k, v in ref.items() if k != "offset"}


def _from_storage(stored, version: int, raw_len: int = 0) -> dict:
    """The header of a format-4 or -5 archive from its stored form (`raw_len` bytes of it);
    ArchiveError where the columns do not make a table (what is in them is the schema's to
    judge)."""
    if not isinstance(stored, dict):
        raise ArchiveError("header is not an object")
    n, columns = stored.get("entry_count"), stored.get("entry_columns")
    if not (schema.is_int(n, 0, schema.MAX_ENTRIES) and isinstance(columns, dict)
            and all((isinstance(c, list) and len(c) == n) or (version >= 5 and n and not isinstance(c, list))
                    for c in columns.values())):
        raise ArchiveError("header: the entry columns do not make a table")
    shared = [k for k, c in columns.items() if not isinstance(c, list)]
    # A shared column costs a few bytes whatever the entry count, so the table it spells out is
    # bounded here as format 4's was by its text: entries are at most the names listed (names
    # differ, so two entries or more list theirs), and shared cells at most the header's bytes.
    if shared and n > 1 and (_NAME_KEY in shared or n * len(shared) > 2 * raw_len + 4096):
        raise ArchiveError("header: the entry columns do not make a table")
    times = columns.get(_TIME_KEY)
    if isinstance(times, list):
        prev, out = 0, []
        for d in times:
            if d is not None:
                if not schema.is_int(d, -(1 << 63), (1 << 63) - 1):
                    raise ArchiveError("header: bad modification time")
                prev += d
            out.append(None if d is None else prev)
        columns = {**columns, _TIME_KEY: out}
    if version >= 5 and isinstance(columns.get(_NAME_KEY), list):
        columns = {**columns, _NAME_KEY: _names(columns[_NAME_KEY])}
    # A column's one value is shared by its entries (a reader treats entries as read-only), but
    # for payload references, which each get their own offset below.
    columns = {k: c if isinstance(c, list) else [dict(c) for _ in range(n)] if k == "data" and isinstance(c, dict)
               else [c] * n for k, c in columns.items()}
    header = {k: v for k, v in stored.items() if k not in ("entry_count", "entry_columns")}
    header["entries"] = [{k: c[i] for k, c in columns.items() if c[i] is not None} for i in range(n)]
    if version >= 5:
        at = 0
        for ref in _refs(header):
            if "offset" in ref or not schema.is_int(ref.get("length")):
                raise ArchiveError("header: bad payload reference")
            ref["offset"] = at
            at += ref["length"]
    return header


def _deflate(raw: bytes, zdict: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=zdict)
    return c.compress(raw) + c.flush()


def _inflate(body: bytes, length: int, zdict: bytes) -> bytes:
    """Exactly `length` bytes from the primed deflate stream `body`, never more."""
    d = zlib.decompressobj(-15, zdict=zdict)
    try:
        raw = d.decompress(body, length + 1)
    except zlib.error:
        raise ArchiveError("header does not decompress") from None
    if len(raw) != length or not d.eof or d.unused_data:
        raise ArchiveError("header does not decompress to its declared length")
    return raw


def _lzma2(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(HEADER_DICT))


def _unlzma2(body: bytes, length: int) -> bytes:
    try:
        return b"".join(unstore_chunks(body, {"codec": "lzma2", "dict_size": HEADER_DICT}, length))
    except ArchiveError:
        raise ArchiveError("header does not decompress") from None


# Format 5's header: the stored form's packed bytes (bbans.archive.packed) as they are, under
# LZMA2, or under deflate primed with packed headers of typical archives; the first byte names
# which, and the writer keeps the shortest.
HEADER5_RAW, HEADER5_LZMA2, HEADER5_DEFLATE_DICT = 0, 1, 2


def _compress_header(header: dict, version: int) -> tuple[bytes, bytes]:
    """(raw header bytes, stored header bytes) of a header in this format version."""
    if version < 4:
        raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        return raw, _lzma2(raw)
    if version == 4:
        raw = json.dumps(_to_storage(header, version), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        return raw, min(bytes([HEADER_LZMA2]) + _lzma2(raw),
                        bytes([HEADER_DEFLATE_DICT]) + _deflate(raw, header_words.DICT_1), key=len)
    raw = packed.dumps(_to_storage(header, version))
    return raw, min(bytes([HEADER5_RAW]) + raw, bytes([HEADER5_LZMA2]) + _lzma2(raw),
                    bytes([HEADER5_DEFLATE_DICT]) + _deflate(raw, header_words.DICT_2), key=len)


def _decompress_header(head: bytes, raw_len: int, version: int) -> dict:
    """The header dict from its stored bytes (ArchiveError naming what is wrong)."""
    if version < 4:
        raw = _unlzma2(head, raw_len)
    else:
        codec, body = (head[0] if head else -1), head[1:]
        if version == 4 and codec == HEADER_LZMA2 or version >= 5 and codec == HEADER5_LZMA2:
            raw = _unlzma2(body, raw_len)
        elif version == 4 and codec == HEADER_DEFLATE_DICT:
            raw = _inflate(body, raw_len, header_words.DICT_1)
        elif version >= 5 and codec == HEADER5_DEFLATE_DICT:
            raw = _inflate(body, raw_len, header_words.DICT_2)
        elif version >= 5 and codec == HEADER5_RAW:
            if len(body) != raw_len:
                raise ArchiveError("header is not its declared length")
            raw = body
        else:
            raise ArchiveError(f"unknown header codec {codec}")
    if version >= 5:
        try:
            return _from_storage(packed.loads(raw), version, len(raw))
        except RecursionError:
            raise ArchiveError("header nested too deeply") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArchiveError("header is not valid JSON") from None
    return _from_storage(header, version) if version >= 4 else header


def _preamble(version: int, head_len: int, raw_len: int, payload_len: int) -> bytes:
    if version < 5:
        return _PREAMBLE.pack(MAGIC, version, head_len, raw_len, payload_len)
    return _START.pack(MAGIC, version) + packed.varint(head_len) + packed.varint(raw_len) + packed.varint(payload_len)


def _trailer_size(version: int) -> int:
    return TRAILER_SIZE if version < 5 else TRAILER_SIZE_5


def _read_lengths(f, version: int) -> tuple[int, int, int, int]:
    """(header length, raw header length, payload length, preamble size) read from `f`, which
    stands just after the magic and version."""
    if version < 5:
        rest = f.read(PREAMBLE_SIZE - _START.size)
        if len(rest) < PREAMBLE_SIZE - _START.size:
            raise ArchiveError("truncated (shorter than the preamble)")
        head_len, raw_len, payload_len = struct.unpack("<IIQ", rest)
        return head_len, raw_len, payload_len, PREAMBLE_SIZE
    rest, pos, values = f.read(3 * 10), 0, []
    try:
        for _ in range(3):
            n, pos = packed.read_varint(rest, pos)
            values.append(n)
    except IndexError:
        raise ArchiveError("truncated (shorter than the preamble)") from None
    except ValueError:
        raise ArchiveError("preamble holds a malformed length") from None
    f.seek(_START.size + pos)
    return values[0], values[1], values[2], _START.size + pos


def pack(header: dict, blobs: list[bytes], version: int = FORMAT_VERSION) -> bytes:
    """Archive bytes: preamble, compressed header, the blobs back to back, sha256."""
    raw, head = _compress_header(header, version)
    payload_len = sum(len(b) for b in blobs)
    h = hashlib.sha256()
    out = io.BytesIO()
    for part in (_preamble(version, len(head), len(raw), payload_len), head, *blobs):
        h.update(part)
        out.write(part)
    out.write(h.digest()[:_trailer_size(version)])
    return out.getvalue()


def unpack(data: bytes) -> tuple[int, dict, bytes]:
    """(format version, header, payload area) of archive bytes, unchecked: the inverse of `pack`
    for tools and tests that take archives apart. `Reader` is the checked way in."""
    f = io.BytesIO(data)
    _, version = _START.unpack(f.read(_START.size))
    head_len, raw_len, payload_len, start = _read_lengths(f, version)
    head = data[start:start + head_len]
    return version, _decompress_header(head, raw_len, version), data[start + head_len:start + head_len + payload_len]


class Blobs:
    """Hands out consecutive (offset, length) slots in the payload area."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.end = 0

    def add(self, data: bytes) -> dict:
        ref = {"offset": self.end, "length": len(data)}
        self.parts.append(data)
        self.end += len(data)
        return ref


class Reader:
    """A checked archive. Construction validates everything that can be validated without
    decoding; blobs are read lazily from the file (or bytes)."""

    def __init__(self, source: str | os.PathLike | bytes, name: str | None = None):
        self.name = name or ("<memory>" if isinstance(source, (bytes, bytearray)) else os.fspath(source))
        if isinstance(source, (bytes, bytearray)):
            self._f = io.BytesIO(bytes(source))
            size = len(source)
        else:
            try:
                # O_NONBLOCK: opening a fifo named as the archive must not hang.
                fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
                self._f = os.fdopen(fd, "rb")
                st = os.fstat(fd)
            except FileNotFoundError:
                raise BBANSError(f"{self.name}: no such file") from None
            except IsADirectoryError:
                raise BBANSError(f"{self.name}: is a directory, not an archive") from None
            except OSError as exc:
                raise BBANSError(f"{self.name}: cannot read ({exc.strerror})") from None
            if not stat.S_ISREG(st.st_mode):
                self._f.close()
                raise BBANSError(f"{self.name}: not a regular file")
            size = st.st_size
        self.size = size
        try:
            self._check(size)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, size: int) -> None:
        f = self._f
        start = f.read(_START.size)
        if len(start) < _START.size or start[:6] != MAGIC:
            raise ArchiveError(f"{self.name}: not a bbans archive (bad magic)")
        version = _START.unpack(start)[1]
        if version > FORMAT_VERSION:
            raise ArchiveError(
                f"{self.name}: made by a newer bbans (format {version}); this bbans "
                f"{__version__} reads formats {', '.join(map(str, schema.FORMATS_READ))}"
            )
        if version not in schema.FORMATS_READ:
            raise ArchiveError(f"{self.name}: unknown archive format {version}")
        try:
            head_len, raw_len, payload_len, pre_len = _read_lengths(f, version)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.name}: {exc} ({size} bytes)") from None
        trailer = _trailer_size(version)
        want = pre_len + head_len + payload_len + trailer
        if want > size:
            raise ArchiveError(f"{self.name}: truncated (declares {want} bytes, file has {size})")
        if want < size:
            raise ArchiveError(f"{self.name}: {size - want} unexpected bytes after the end of the archive")
        # The checksum first: every later check may then assume the bytes are as written.
        f.seek(0)
        h = hashlib.sha256()
        left = size - trailer
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise ArchiveError(f"{self.name}: truncated while reading")
            h.update(chunk)
            left -= len(chunk)
        if f.read(trailer) != h.digest()[:trailer]:
            raise ArchiveError(f"{self.name}: checksum mismatch (the archive is corrupt)")
        if raw_len > min(schema.MAX_HEADER_JSON, LZMA_MAX_RATIO * head_len + 4096):
            raise ArchiveError(f"{self.name}: header declares {raw_len} bytes from {head_len} compressed")
        f.seek(pre_len)
        try:
            header = _decompress_header(f.read(head_len), raw_len, version)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.name}: {exc}") from None
        self.header_len, self.payload_len = head_len, payload_len
        self.payload_start = pre_len + head_len
        self.fixed = pre_len + trailer
        try:
            schema.validate_header(header, payload_len, version)
        except ArchiveError as exc:
            raise ArchiveError(f"{self.name}: {exc}") from None
        self.version = version
        self.header = header
        self.entries: list[dict] = header["entries"]
        self.groups: list[dict] = header["groups"]

    def blob(self, ref: dict) -> bytes:
        self._f.seek(self.payload_start + ref["offset"])
        data = self._f.read(ref["length"])
        if len(data) != ref["length"]:
            raise ArchiveError(f"{self.name}: truncated while reading a payload")
        return data

    @property
    def overhead(self) -> int:
        return self.fixed + self.header_len


# ---- stored entries --------------------------------------------------------------------------


def store(data: bytes) -> tuple[bytes, dict]:
    """Raw LZMA2 at preset 9e, or the bytes themselves when that does not help."""
    dict_size = _dict_size_for(len(data))
    packed = lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(dict_size))
    if len(packed) < len(data):
        return packed, {"codec": "lzma2", "dict_size": dict_size}
    return data, {"codec": "raw"}


def unstore_chunks(blob: bytes, spec: dict, size: int) -> Iterator[bytes]:
    """The stored bytes in pieces, never producing more than the declared size."""
    if spec["codec"] == "raw":
        yield blob
        return
    if spec["codec"] == jxl.JPEG_CODEC:
        yield jxl.restore(blob, size)
        return
    d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters(spec["dict_size"], None))
    produced = 0
    data = blob
    try:
        while True:
            chunk = d.decompress(data, max_length=min(1 << 20, size - produced + 1))
            data = b""
            produced += len(chunk)
            if produced > size:
                raise ArchiveError("stored entry decodes to more bytes than declared")
            if chunk:
                yield chunk
            if d.eof or (not chunk and d.needs_input):
                break
    except lzma.LZMAError:
        raise ArchiveError("stored entry is not valid LZMA2 data") from None
    if produced != size:
        raise ArchiveError(f"stored entry decodes to {produced} bytes, declared {size}")
