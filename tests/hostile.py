"""Hostile archives: crafted from a real one, then re-signed so the trailing sha256 holds.

Each case is (name, mutate) where mutate(header, payload) returns the new (header, payload)
and may set `version`. Both the test suite (tests/test_hostile.py) and the long fuzz run
(benchmarks/fuzz_archive.py) use this table; a case is refused when the CLI exits 3 or 4 with
one line on stderr, quickly, and writes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import random
import struct

from bbans.archive import format as container
from bbans.archive import packed

Case = tuple[str, "callable"]


def stored_form(header, version: int = container.FORMAT_VERSION):
    """A header as formats 4 and 5 store it (entries by column, times as differences; format 5
    without payload offsets), built as a careless writer would from whatever the header holds:
    odd values stay odd for the reader to refuse, and a null field, which a column cannot hold,
    is left out."""
    entries = header.get("entries") if isinstance(header, dict) else None
    if not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
        return header if not isinstance(header, dict) else {**header, "entry_columns": entries}
    entries = [{k: v for k, v in e.items() if v is not None} for e in entries]
    if version >= 5:
        header = copy.deepcopy(header)
        entries = copy.deepcopy(entries)
        refs = [g.get("payload") for g in header.get("groups", []) if isinstance(g, dict)]
        refs += [header.get("frames")] + [e.get("data") for e in entries]
        for ref in refs:
            if isinstance(ref, dict):
                ref.pop("offset", None)
    keys = sorted({k for e in entries for k in e})
    columns = {k: [e.get(k) for e in entries] for k in keys}
    prev, times = 0, []
    for t in columns.get("mtime_ns", []):
        ok = isinstance(t, int) and not isinstance(t, bool)
        times.append(t - prev if ok else t)
        prev = t if ok else prev
    if "mtime_ns" in columns:
        columns["mtime_ns"] = times
    out = {k: v for k, v in header.items() if k != "entries"}
    out.update(entry_count=len(entries), entry_columns=columns)
    return out


def pack_carelessly(v) -> bytes:
    """Format 5's packed encoding of any value, written here independently of the package's
    encoder, without its limits: integers of any size, infinities, any depth (no recursion)."""
    out, todo = bytearray(), [v]
    while todo:
        v = todo.pop()
        if isinstance(v, bytes):  # already encoded (a key)
            out += v
        elif v is None or isinstance(v, bool):
            out.append({None: packed.NULL, False: packed.FALSE, True: packed.TRUE}[v])
        elif isinstance(v, int):
            out += bytes([v]) if 0 <= v < 0x80 else bytes([packed.UINT]) + packed.varint(v) if v >= 0 \
                else bytes([packed.NEGINT]) + packed.varint(-1 - v)
        elif isinstance(v, float):
            text = repr(v).encode() if v == v and abs(v) != float("inf") else b"1e999"
            out += bytes([packed.FLOAT]) + packed.varint(len(text)) + text
        elif isinstance(v, str):
            raw = v.encode("utf-8", "surrogatepass")
            out += bytes([packed.STR]) + packed.varint(len(raw)) + raw
        elif isinstance(v, list):
            out += bytes([packed.LIST]) + packed.varint(len(v))
            todo.extend(reversed(v))
        elif isinstance(v, dict):
            out += bytes([packed.DICT]) + packed.varint(len(v))
            for k in reversed(sorted(v, key=packed._key_order)):
                todo.append(v[k])
                raw = k.encode("utf-8", "surrogatepass")
                todo.append(packed.varint(packed.KEYS.index(k) + 1) if k in packed.KEYS else b"\x00" + packed.varint(len(raw)) + raw)
        else:
            raise TypeError(type(v).__name__)
    return bytes(out)


def resign(header, payload: bytes, version: int = container.FORMAT_VERSION) -> bytes:
    """Archive bytes around a header (a dict in the shape readers return, or its stored bytes
    as they are: JSON text up to format 4, packed from format 5) and a payload area."""
    if not isinstance(header, (str, bytes)):
        if version < 4:
            return container.pack(header, [payload], version)
        stored = stored_form(header, version)
        header = pack_carelessly(stored) if version >= 5 else \
            json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    raw = header.encode() if isinstance(header, str) else header
    head = lzma.compress(raw, format=lzma.FORMAT_RAW,
                         filters=[{"id": lzma.FILTER_LZMA2, "dict_size": container.HEADER_DICT, "preset": 1}])
    if version >= 5:
        body = container._preamble(version, len(head) + 1, len(raw), len(payload)) \
            + bytes([container.HEADER5_LZMA2]) + head + payload
        return body + hashlib.sha256(body).digest()[:container.TRAILER_SIZE_5]
    if version >= 4:
        head = bytes([container.HEADER_LZMA2]) + head
    body = struct.pack("<6sHIIQ", container.MAGIC, version, len(head), len(raw), len(payload)) + head + payload
    return body + hashlib.sha256(body).digest()


def _model_entries(h):
    return [e for e in h["entries"] if e["kind"] == "model"]


def _first_model(h):
    return _model_entries(h)[0]


def _set_engine(key, value):
    def f(h, p):
        h["groups"][0]["engine"][key] = value
        return h, p
    return f


def _set_group(key, value):
    def f(h, p):
        h["groups"][0][key] = value
        return h, p
    return f


def _set_top(key, value):
    def f(h, p):
        h[key] = value
        return h, p
    return f


def _set_stored_codec(h, p):
    next(e for e in h["entries"] if e["kind"] == "stored")["data"]["codec"] = "zstd"
    return h, p


def _both(*fs):
    def f(h, p):
        for g in fs:
            h, p = g(h, p)
        return h, p
    return f


def _set_entry(key, value, kind="model"):
    def f(h, p):
        e = next(e for e in h["entries"] if e["kind"] == kind)
        e[key] = value
        return h, p
    return f


def _set_image(key, value):
    def f(h, p):
        _first_model(h)["image"][key] = value
        return h, p
    return f


def _set_recipe(key, value, kind="png"):
    def f(h, p):
        e = next(e for e in _model_entries(h) if e.get("rebuild", {}).get("kind") == kind)
        e["rebuild"][key] = value
        return h, p
    return f


def _huge_image(h, p):
    # A 4116x4088 image claimed by a few hundred bytes of payload.
    e = _first_model(h)
    g = h["groups"][e["group"]]
    old = -(-e["image"]["width"] // 28) * -(-e["image"]["height"] // 28)
    w, hh = 4116, 4088
    new = -(-w // 28) * -(-hh // 28)
    e["image"].update(width=w, height=hh)
    e["rebuild"]["filters"] = [[0, hh]]
    g["tiles"] += new - old
    g["engine"]["batches"] = [[1, g["tiles"]]]
    return h, p


def _message_parts(h, p) -> tuple[int, int, int, int]:
    """(start, length, lanes, bytes of the phantom count) of the first group's bare message."""
    g = h["groups"][0]
    start, n = g["payload"]["offset"], g["payload"]["length"]
    k = 1
    while p[start + k - 1] >= 0x80:
        k += 1
    return start, n, g["engine"]["lanes"], k


def _random_payload(h, p):
    # Same length, random words: the decoder must stop at its first phantom word, not run on.
    start, n, lanes, k = _message_parts(h, p)
    rng = random.Random(1)
    # Heads must stay in range so the message is well formed; only the words are random.
    heads = b"".join(struct.pack("<Q", (1 << 31) | rng.getrandbits(31)) for _ in range(lanes))
    body = bytes(rng.getrandbits(8) for _ in range(n - k - 8 * lanes))
    return h, p[:start + k] + heads + body + p[start + n:]


def _huge_phantom_count(h, p):
    start, n, _, k = _message_parts(h, p)
    msg = packed.varint((1 << 32) - 1) + p[start + k:start + n]
    h["groups"][0]["payload"]["length"] = len(msg)
    return h, p[:start] + msg + p[start + n:]


def _deep_names(h, p):
    for i in range(20):
        h["entries"].append({"path": "/".join(["d"] * 50000) + str(i), "kind": "dir"})
    return h, p


def _long_name(h, p):
    h["entries"].append({"path": "x" * 100000, "kind": "dir"})
    return h, p


def _lone_surrogate(h, p):
    h["entries"].append({"path": "bad\ud800name", "kind": "dir"})
    h["entries"].sort(key=lambda e: e["path"])
    return h, p


def _surrogate_link(h, p):
    h["entries"].append({"path": "zz-link", "kind": "symlink", "target": "a\udfffb\ud800"})
    return h, p


def _v1_meta(value):
    """A format-1 archive (no recipes, no frames blob) whose first image carries `value` as metadata."""
    def f(h, p):
        frames = h.pop("frames")
        start, n = frames["offset"], frames["length"]
        p = p[:start] + p[start + n:]
        for e in h["entries"]:
            if e["kind"] == "stored" and e["data"]["offset"] > start:
                e["data"]["offset"] -= n
            if e["kind"] == "model":
                e.pop("rebuild")
                e["image"]["meta"] = {}
        _first_model(h)["image"]["meta"] = value
        h["format"] = 1
        return h, p
    return f


def _cut_payload(h, p):
    """The group's rANS message with every tail word dropped: the decoder's first
    renormalisation finds nothing to read."""
    start, n, lanes, k = _message_parts(h, p)
    msg = p[start:start + k + 8 * lanes]
    h["groups"][0]["payload"]["length"] = len(msg)
    return h, p[:start] + msg + p[start + n:]


def _frames_claim(size):
    def f(h, p):
        h["frames"]["size"] = size
        return h, p
    return f


def _wrong_filters(h, p):
    e = next(e for e in _model_entries(h) if e.get("rebuild", {}).get("kind") == "png")
    rows = e["image"]["height"]
    e["rebuild"]["filters"] = [[4, rows]]
    return h, p


def _header_not_object(h, p):
    return [h], p


def _columns(edit):
    """The stored header, edited as `edit` says, as packed bytes."""
    def mutate(h, p):
        s = stored_form(h)
        edit(s)
        return pack_carelessly(s), p

    return mutate


def _nested(h, p):
    s = stored_form(h)
    deep: list = []
    for _ in range(100000):
        deep = [deep]
    s["deep"] = deep
    return pack_carelessly(s), p


def _many_entries_from_shared_columns(h, p):
    """Four million entries spelt by columns of one value each: a few bytes of header."""
    s = stored_form(h)
    s["entry_count"] = 1 << 22
    s["entry_columns"] = {"path": "a", "kind": "dir", **{f"x{i}": i for i in range(20)}}
    return pack_carelessly(s), p


def _groups_null(h, p):
    s = stored_form(h)
    s["groups"] = None
    return pack_carelessly(s), p


def _swap_groups_model(h, p):
    h["groups"][0]["model"] = "cifar10"
    return h, p


CASES: list[Case] = [
    ("huge image from a tiny payload", _huge_image),
    ("K of 100,000 steps", _set_engine("K", 100000)),
    ("K changed to 3", _set_engine("K", 3)),
    ("prior and posterior precision 24", _both(_set_engine("prior_prec", 24), _set_engine("q_prec", 24))),
    ("posterior precision below the prior's", _set_engine("q_prec", 4)),
    ("observation precision 3", _set_engine("obs_prec", 3)),
    ("1,024 threads", _set_engine("threads", 1024)),
    ("batch size a million", _set_engine("batch_size", 1 << 20)),
    ("batches that do not cover the tiles", _set_engine("batches", [[1, 1]])),
    ("batch larger than any allowed", _set_engine("batches", [[5000, 1]])),
    ("lanes as a string", _set_engine("lanes", "8")),
    ("dtype float16", _set_engine("dtype", "float16")),
    ("dtype a number", _set_engine("dtype", 5)),
    ("K-step rate a string", _set_engine("lr", "fast")),
    ("K-step rate infinite", _set_engine("lr", 1e309)),
    ("K-step rate negative", _set_engine("lr", -1.0)),
    ("device tpu", _set_engine("device", "tpu")),
    ("unknown engine setting", _set_engine("turbo", True)),
    ("a latent channel the model lacks left uncoded", _set_engine("collapsed", [[0, 4095]])),
    ("a latent layer the model lacks left uncoded", _set_engine("collapsed", [[63, 0]])),
    ("uncoded latent channels as a string", _set_engine("collapsed", "all")),
    ("uncoded latent channel negative", _set_engine("collapsed", [[0, -1]])),
    ("model hash shorter than 16 hex digits", _set_group("model_hash", "e105b901cf70")),
    ("model hash not hex", _set_group("model_hash", "zz" * 8)),
    ("engine not an object", _set_group("engine", [1])),
    ("model of another kind", _swap_groups_model),
    ("model hash a number", _set_group("model_hash", 5)),
    ("coded_dims a string", _set_group("coded_dims", "many")),
    ("neg_elbo_bits a list", _set_group("neg_elbo_bits", [1])),
    ("versions a list", _set_group("versions", ["torch"])),
    ("random payload words", _random_payload),
    ("phantom count 2**32-1", _huge_phantom_count),
    ("payload cut to its heads", _cut_payload),
    ("20 names of 50,000 components", _deep_names),
    ("a 100,000-character name", _long_name),
    ("a lone surrogate in a name", _lone_surrogate),
    ("a lone surrogate in a link target", _surrogate_link),
    ("image width a float", _set_image("width", 28.0)),
    ("image height negative", _set_image("height", -28)),
    ("image mode CMYK", _set_image("mode", "CMYK")),
    ("image format JPEG", _set_image("format", "JPEG")),
    ("est_bits a string", _set_entry("est_bits", "lots")),
    ("checksum a number", _set_entry("sha256", 12345)),
    ("checksum wrong", _set_entry("sha256", "0" * 16)),
    ("perm a string", _set_entry("perm", "rwx")),
    ("mtime beyond any clock", _set_entry("mtime_ns", 1 << 70)),
    ("size negative", _set_entry("size", -1)),
    ("tiles a string", _set_entry("tiles", "all")),
    ("group checksum wrong", _set_group("sha256", "0" * 64)),
    ("group checksum missing", lambda h, p: (h["groups"][0].pop("sha256"), (h, p))[1]),
    ("recipe kind unknown", _set_recipe("kind", "gif")),
    ("recipe zlib level 10", _set_recipe("zlib", {"level": 10, "wbits": 15, "mem": 8, "strategy": 0, "header": [120, 156]})),
    ("recipe zlib settings a string", _set_recipe("zlib", "default")),
    ("recipe filter type 9", _set_recipe("filters", [[9, 28]])),
    ("recipe filter rule unknown", _set_recipe("rule", "gimp")),
    ("recipe filters short of the rows", _set_recipe("filters", [[0, 3]])),
    ("recipe filters of another type", _wrong_filters),
    ("recipe IDAT chunk size beyond 2**31", _set_recipe("idat", 1 << 40)),
    ("recipe IDAT chunk size a list", _set_recipe("idat", [[100, 1]])),
    ("recipe split past its frame", _set_recipe("split", 1 << 20)),
    ("recipe frame longer than the frames blob", lambda h, p: _set_recipe("frame", h["frames"]["size"] + 1)(h, p)),
    ("recipe frame a pair", _set_recipe("frame", [0, 10])),
    ("recipe raster stride huge", _set_recipe("stride", 1 << 30, kind="raster")),
    ("recipe raster layout BGR for a grey image", _set_recipe("layout", "BGR", kind="raster")),
    ("frames blob declaring a gigabyte", _frames_claim(1 << 30)),
    ("frames blob one byte short", lambda h, p: _frames_claim(h["frames"]["size"] - 1)(h, p)),
    ("format-1 metadata dpi a string", _v1_meta({"dpi": "300"})),
    ("format-1 metadata icc a number", _v1_meta({"icc": 5})),
    ("format-1 metadata icc not base64", _v1_meta({"icc": "%%%"})),
    ("format-1 metadata text of numbers", _v1_meta({"text": [[1, 2, 3]]})),
    ("format-1 metadata transparency a dict", _v1_meta({"transparency": {"a": 1}})),
    ("format-1 metadata unknown key", _v1_meta({"xmp": "x"})),
    ("format-1 metadata not an object", _v1_meta([1, 2])),
    ("header an array", _header_not_object),
    ("four million entries from columns of one value", _many_entries_from_shared_columns),
    ("groups null", _groups_null),
    ("a raster recipe marked bare", _set_recipe("bare", True, kind="raster")),
    ("header nested 100,000 deep", _nested),
    ("created_by a string", _set_top("created_by", "me")),
    ("device class a number", _set_top("device", 7)),
    ("entries an object", _set_top("entries", {})),
    ("entry columns of unequal length", _columns(lambda s: s["entry_columns"]["path"].pop())),
    ("entry count beyond the limit", _columns(lambda s: s.update(entry_count=1 << 40))),
    ("entry columns a list", _columns(lambda s: s.update(entry_columns=[1]))),
    ("entry count missing", _columns(lambda s: s.pop("entry_count"))),
    ("time difference a float", _columns(lambda s: s["entry_columns"]["mtime_ns"].__setitem__(0, 1.5))),
    ("time differences summing past any clock", _columns(lambda s: s["entry_columns"]["mtime_ns"].__setitem__(1, 1 << 62))),
    ("stored entry declaring a gigabyte", _set_entry("size", 1 << 30, kind="stored")),
    ("stored entry codec unknown", _set_stored_codec),
]


def lzma_bomb_header() -> bytes:
    """An archive whose header is 65 MiB of JSON (valid, whitespace-padded) in a few KiB."""
    return resign(b'{"entries":[],"format":2,"groups":[]' + b" " * (65 << 20) + b"}", b"", 2)


def crafted(base: bytes, mutate) -> bytes:
    version, header, payload = container.unpack(base)
    h, p = mutate(copy.deepcopy(header), payload)
    if isinstance(h, dict) and h.get("format") == 1:
        version = 1
    return resign(h, p, version)


# ---- mutation fuzzing ----------------------------------------------------------------------------

_ODD_VALUES = [None, True, -1, 0, 1 << 40, 1.5, 1e300, "", "x" * 300, "\ud800", [], {}, [1, 2], {"a": 1}]


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def mutations(base: bytes, n: int, seed: int = 0):
    """n archives, each with one field of the header replaced by an odd value, re-signed."""
    rng = random.Random(seed)
    version, header, payload = container.unpack(base)
    paths = list(_paths(header))
    for i in range(n):
        h = copy.deepcopy(header)
        path = rng.choice(paths)
        node = h
        for k in path[:-1]:
            node = node[k]
        value = rng.choice(_ODD_VALUES)
        if rng.random() < 0.3 and isinstance(node[path[-1]], int) and not isinstance(node[path[-1]], bool):
            value = node[path[-1]] + rng.choice([-1, 1, 1 << 20, -(1 << 20)])
        node[path[-1]] = value
        yield f"field {'/'.join(map(str, path))} = {str(value)[:40]!r}", resign(h, payload, version)
