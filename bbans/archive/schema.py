"""The archive header's schema: one pass that type- and range-checks every field (docs/FORMAT.md).

An archive is input from strangers and its trailing sha256 proves nothing about intent, so
everything the reader later relies on is checked here first, before anything is allocated or
written: types, ranges, names, payload references, and the limits that decide time and memory,
each measured against the bytes the archive actually brings. Every failure is an ArchiveError
naming the field.
"""

from __future__ import annotations

import math
import re

from bbans.errors import ArchiveError
from bbans.io import images, rebuild
from bbans.models import registry

FORMATS_READ = (1, 2, 3, 4, 5)
STAGING_PREFIX = ".bbans-partial-"

# LZMA2 never expands data by more than ~7000x (measured 6841x on 100 MB of zeros), so a blob
# declaring more than this is a bomb or a lie.
LZMA_MAX_RATIO = 8192
LZMA_MAX_DICT = 64 << 20
JPEG_MAX_RATIO = 4
MAX_HEADER_JSON = 1 << 26
MAX_ENTRIES = 1 << 22
# Linux's PATH_MAX and NAME_MAX: no longer name can be created on the way out anyway.
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
CHECKSUM_HEX = 16

# What a model group may ask of the decoder, against the bits its payload brings: coded values,
# and coded values times inference passes (K + 1). Real archives spend far more per value
# (binarized digits, the cheapest images a model codes, take 0.17 bits each); the writer stores
# a group that would fall under these floors instead of writing it (bbans.archive.writer).
MAX_K = 64
DIMS_FIXED = 1 << 14
DIMS_PER_BIT = 64
WORK_FIXED = 1 << 18
WORK_PER_BIT = 512

DRIVE = re.compile(r"^[A-Za-z]:")
_HEX = re.compile(r"^[0-9a-f]+$")
_INT_RANGES = {"K": (0, MAX_K), "lanes": (1, 1 << 16), "batch_size": (1, 4096), "threads": (1, 64),
               "prior_prec": (1, 12), "q_prec": (1, 28), "obs_prec": (8, 28), "seed": (0, (1 << 63) - 1)}
_TIFF_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits", "group3", "group4"}
_LAYOUTS = {"1": ("1", "1;I"), "L": ("L",), "RGB": ("RGB", "BGR")}


def need(cond: bool, what: str) -> None:
    if not cond:
        raise ArchiveError(f"invalid header: {what}")


def is_int(v, lo: int = 0, hi: int = 1 << 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_str(v, max_len: int = 4096) -> bool:
    return isinstance(v, str) and len(v) <= max_len


def _is_checksum(v) -> bool:
    return isinstance(v, str) and len(v) == CHECKSUM_HEX and bool(_HEX.match(v))


def _fs_bytes(text: str) -> bytes | None:
    """The name's bytes on a POSIX filesystem (undecodable bytes travel as lone surrogates)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def check_name(path) -> None:
    """Reject names that could land outside the output folder or differ across systems."""
    need(isinstance(path, str) and path != "", "an entry name is empty or not a string")
    shown = repr(path) if len(path) <= 200 else repr(path[:200]) + "..."
    if "\x00" in path:
        raise ArchiveError(f"entry name {shown} contains a NUL byte")
    raw = _fs_bytes(path)
    if raw is None:
        raise ArchiveError(f"entry name {shown} is not a file name on any system (lone surrogate)")
    if len(raw) > MAX_PATH_BYTES:
        raise ArchiveError(f"entry name {shown} is longer than {MAX_PATH_BYTES} bytes")
    if "\\" in path:
        raise ArchiveError(f"entry name {shown} contains a backslash")
    if path.startswith("/"):
        raise ArchiveError(f"entry name {shown} is an absolute path")
    if DRIVE.match(path):
        raise ArchiveError(f"entry name {shown} starts with a drive letter")
    parts = path.split("/")
    for part in parts:
        if part == "..":
            raise ArchiveError(f"entry name {shown} climbs out of the output folder ('..')")
        if part in ("", "."):
            raise ArchiveError(f"entry name {shown} has an empty or '.' component")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise ArchiveError(f"entry name {shown} has a component longer than {MAX_COMPONENT_BYTES} bytes")
    if parts[0].startswith(STAGING_PREFIX):
        raise ArchiveError(f"entry name {shown} is reserved for bbans' staging folder")


def work_problem(coded_values: int, K: int, payload_bytes: int) -> str:
    """Why a model group of this size may not be decoded from this payload ("" when it may)."""
    bits = 8 * payload_bytes
    if coded_values > DIMS_FIXED + DIMS_PER_BIT * bits:
        return f"{coded_values} coded values from a {payload_bytes}-byte payload"
    if coded_values * (K + 1) > WORK_FIXED + WORK_PER_BIT * bits:
        return f"{coded_values} coded values x {K + 1} inference passes from a {payload_bytes}-byte payload"
    return ""


class _Payload:
    """Blobs tile the payload area in header order; anything else is not an archive bbans wrote."""

    def __init__(self, length: int):
        self.length, self.end = length, 0

    def take(self, ref, what: str) -> None:
        need(isinstance(ref, dict), f"{what}: payload reference missing")
        need(is_int(ref.get("offset")) and is_int(ref.get("length")), f"{what}: bad payload reference")
        need(ref["offset"] == self.end, f"{what}: payload out of order")
        need(ref["offset"] + ref["length"] <= self.length, f"{what}: payload runs past the end of the file")
        self.end += ref["length"]


def _check_packed(spec, size, what: str, version: int = 2) -> None:
    """A stored blob's codec and declared size."""
    codec = spec.get("codec")
    need(codec != "jpeg-jxl" or version >= 3, f"{what}: codec {codec} in a format {version} archive")
    if codec == "raw":
        need(size == spec["length"], f"{what}: raw size disagrees with its payload")
    elif codec == "lzma2":
        need(is_int(spec.get("dict_size"), 4096, LZMA_MAX_DICT), f"{what}: bad LZMA2 dictionary size")
        if size > LZMA_MAX_RATIO * spec["length"] + 4096:
            raise ArchiveError(f"{what} declares {size} bytes from {spec['length']} compressed")
    elif codec == "jpeg-jxl":
        # JPEG-XL saves a fifth or so of a JPEG; a file 4x its stream is no JPEG it made.
        if size > JPEG_MAX_RATIO * spec["length"] + 4096:
            raise ArchiveError(f"{what} declares a {size}-byte JPEG from {spec['length']} bytes of JPEG-XL")
    else:
        raise ArchiveError(f"{what}: unknown codec {codec!r}")


def _check_engine(eng, tiles, what: str) -> None:
    need(isinstance(eng, dict), f"{what}: engine settings missing")
    for key, value in eng.items():
        if key == "batches":
            # The batch sizes the compressor chose, as [size, repeat] pairs covering every tile.
            ok = isinstance(value, list) and len(value) <= tiles and all(
                isinstance(p, list) and len(p) == 2 and is_int(p[0], 1, 4096) and is_int(p[1], 1) for p in value)
            need(ok and sum(a * b for a, b in value) == tiles, f"{what}: engine setting 'batches'")
        elif key == "batch_ks":
            # The K each batch ran, as [K, repeat] pairs; the count is checked against the batches.
            ok = isinstance(value, list) and len(value) <= tiles and all(
                isinstance(p, list) and len(p) == 2 and is_int(p[0], 0, eng.get("K", 0)) and is_int(p[1], 1)
                for p in value)
            need(ok and sum(b for _, b in value) <= tiles, f"{what}: engine setting 'batch_ks'")
        elif key == "collapsed":
            # Latent channels left uncoded, as [layer, channel] pairs; the model checks they exist.
            ok = isinstance(value, list) and len(value) <= 4096 and all(
                isinstance(p, list) and len(p) == 2 and is_int(p[0], 0, 63) and is_int(p[1], 0, 4095) for p in value)
            need(ok, f"{what}: engine setting 'collapsed'")
        elif key in _INT_RANGES:
            lo, hi = _INT_RANGES[key]
            # Steps, lanes, threads and precisions size loops and tables: bounded like lengths.
            need(is_int(value, lo, hi), f"{what}: engine setting {key}={value!r} out of range {lo}..{hi}")
        elif key == "lr":
            need(_is_num(value) and 0 < value <= 1, f"{what}: engine setting lr={value!r}")
        elif key == "device":
            need(value in ("cpu", "cuda"), f"{what}: engine setting device={value!r}")
        elif key == "dtype":
            need(value in ("float32", "float64"), f"{what}: engine setting dtype={value!r}")
        else:
            # A setting a newer bbans added: the engine refuses it by name (exit 4).
            need(isinstance(value, (int, float, str, bool)) or value is None, f"{what}: engine setting {key!r}")
    if "q_prec" in eng and "prior_prec" in eng:
        need(eng["q_prec"] >= eng["prior_prec"], f"{what}: q_prec below prior_prec")


def _check_meta(meta, what: str) -> None:
    """The metadata a format-1 (or keep=pixels) entry's writer puts back."""
    need(isinstance(meta, dict), f"{what}: bad metadata")
    for key, v in meta.items():
        if key in ("icc", "exif"):
            ok = _is_str(v, 1 << 24)
        elif key == "dpi":
            ok = isinstance(v, list) and len(v) == 2 and all(_is_num(x) and 0 < x < 1e9 for x in v)
        elif key == "text":
            ok = isinstance(v, list) and all(
                isinstance(t, list) and (len(t) == 3 and t[2] == "t" or len(t) == 5 and t[2] == "i")
                and all(_is_str(x, 1 << 24) for x in t) for t in v)
        elif key == "transparency":
            ok = is_int(v, 0, 65535) or isinstance(v, list) and len(v) == 3 and all(is_int(x, 0, 65535) for x in v)
        elif key == "gamma":
            ok = is_int(v, 0, (1 << 32) - 1)
        elif key == "srgb":
            ok = is_int(v, 0, 3)
        elif key == "chromaticity":
            ok = isinstance(v, list) and len(v) == 8 and all(is_int(x, 0, (1 << 32) - 1) for x in v)
        elif key == "aspect":
            ok = isinstance(v, list) and len(v) == 2 and all(is_int(x, 0, (1 << 32) - 1) for x in v)
        elif key == "compression":
            ok = v in _TIFF_COMPRESSIONS
        else:
            ok = False
        need(ok, f"{what}: metadata {key!r}")


def _check_recipe(rec, img: dict, what: str, version: int) -> int:
    """A rebuild recipe (rebuild.plan); returns its frame's length."""
    need(isinstance(rec, dict), f"{what}: bad rebuild recipe")
    frame = rec.get("frame")
    need(is_int(frame), f"{what}: bad frame")
    w, h, mode = img["width"], img["height"], img["mode"]
    packed = rebuild.row_bytes(w, mode)
    if rec.get("kind") == "png":
        need(rec.get("mode") == mode, f"{what}: recipe mode")
        bare = rec.get("bare", False)
        need(bare is False or (bare is True and version >= 5), f"{what}: recipe bare")
        implied = rebuild.BARE_PNG_BYTES if bare else 0
        need(is_int(rec.get("split")) and rec["split"] <= frame + implied, f"{what}: recipe split")
        z = rec.get("zlib")
        need(isinstance(z, dict) and set(z) == {"level", "wbits", "mem", "strategy", "header"}
             and is_int(z["level"], 0, 9) and is_int(z["wbits"], 9, 15) and is_int(z["mem"], 1, 9)
             and z["strategy"] in rebuild.ZLIB_STRATEGIES and is_int(z["strategy"])
             and isinstance(z["header"], list) and len(z["header"]) == 2 and all(is_int(b, 0, 255) for b in z["header"])
             and (z["header"][0] * 256 + z["header"][1]) % 31 == 0, f"{what}: recipe zlib settings")
        runs = rec.get("filters")
        need(isinstance(runs, list) and len(runs) <= h and all(
            isinstance(r, list) and len(r) == 2 and is_int(r[0], 0, 4) and is_int(r[1], 1) for r in runs),
            f"{what}: recipe filters")
        need(sum(r[1] for r in runs) == h, f"{what}: recipe filters do not cover the rows")
        need(rec.get("rule", "libpng") in rebuild.FILTER_RULES, f"{what}: recipe filter rule")
        need(is_int(rec.get("idat"), 0, (1 << 31) - 1), f"{what}: recipe idat")
    elif rec.get("kind") == "raster":
        need("bare" not in rec, f"{what}: recipe bare")
        need(rec.get("layout") in _LAYOUTS[mode], f"{what}: recipe layout")
        need(is_int(rec.get("stride"), packed, packed + 64), f"{what}: recipe stride")
        need(is_int(rec.get("offset")) and rec["offset"] <= frame, f"{what}: recipe offset")
        need(isinstance(rec.get("bottom_up"), bool), f"{what}: recipe row order")
    else:
        raise ArchiveError(f"{what}: unknown rebuild recipe {str(rec.get('kind'))[:64]!r}")
    return frame


def _check_image(img, what: str, coded: bool) -> None:
    need(isinstance(img, dict), f"{what}: image description missing")
    need(is_int(img.get("width"), 1, 1 << 31) and is_int(img.get("height"), 1, 1 << 31), f"{what}: bad size")
    need(img["width"] * img["height"] <= images.MAX_PIXELS, f"{what}: image too large")
    if coded:
        need(img.get("format") in images.LOSSLESS_FORMATS, f"{what}: bad image format")
        need(img.get("mode") in ("1", "L", "RGB"), f"{what}: bad image mode")
    else:
        need(_is_str(img.get("format"), 64) and _is_str(img.get("mode"), 64), f"{what}: bad image description")


def validate_header(h, payload_len: int, version: int) -> None:
    """Check every field of a header of this format version; ArchiveError names the first bad one."""
    need(isinstance(h, dict), "not an object")
    need(h.get("format") == version, "format field disagrees with the preamble")
    groups, entries = h.get("groups"), h.get("entries")
    need(isinstance(groups, list) and isinstance(entries, list), "groups/entries missing")
    need(len(entries) <= MAX_ENTRIES and len(groups) <= len(entries), "too many entries")
    cb = h.get("created_by", {})
    need(isinstance(cb, dict) and all(_is_str(v, 256) for v in cb.values()), "created_by")
    need(h.get("device") is None or h.get("device") in ("cpu", "cuda"), "device")
    need("zlib_version" not in h or (version >= 5 and _is_str(h["zlib_version"], 64)), "zlib_version")
    payload = _Payload(payload_len)
    for gi, g in enumerate(groups):
        what = f"group {gi}"
        need(isinstance(g, dict), what)
        need(g.get("model") in registry.NAMES, f"{what}: unknown model {str(g.get('model'))[:64]!r}")
        # A prefix of the model's sha256: 16 hex digits from 2026-12 on, all 64 before.
        need(isinstance(g.get("model_hash"), str) and CHECKSUM_HEX <= len(g["model_hash"]) <= 64
             and _HEX.match(g["model_hash"]) is not None, f"{what}: model hash missing")
        need(g.get("encoder") in ("refit", "baseline"), f"{what}: unknown encoder")
        need(is_int(g.get("tiles"), 1), f"{what}: bad tile count")
        _check_engine(g.get("engine"), g["tiles"], what)
        need(isinstance(g.get("masked"), bool), f"{what}: mask flag missing")
        need(is_int(g.get("coded_dims", 0)), f"{what}: bad coded_dims")
        need(_is_num(g.get("neg_elbo_bits", 0.0)), f"{what}: bad neg_elbo_bits")
        need(is_int(g.get("phantom_peak", 0), 0, (1 << 32) - 1), f"{what}: bad phantom_peak")
        need("sha256" not in g or (version >= 3 and isinstance(g["sha256"], str)
                                   and len(g["sha256"]) in (CHECKSUM_HEX, 64)
                                   and _HEX.match(g["sha256"]) is not None), f"{what}: bad checksum")
        for key in ("versions", "fingerprint"):
            v = g.get(key, {})
            need(isinstance(v, dict) and all(_is_str(k, 256) and (_is_str(x, 1024) or x is None or _is_num(x))
                                             for k, x in v.items()), f"{what}: bad {key}")
        payload.take(g.get("payload"), what)
        # Every tile holds at least one coded value: refuse absurd counts before reading entries.
        problem = work_problem(g["tiles"], g["engine"].get("K", 0), g["payload"]["length"])
        if problem:
            raise ArchiveError(f"{what} ({g['model']}) declares far more than its payload can hold: {problem}")
    frames = h.get("frames")
    if frames is not None:
        need(version >= 2 and isinstance(frames, dict) and is_int(frames.get("size"))
             and _is_str(frames.get("zlib_version", ""), 64), "frames")
        payload.take(frames, "frames")
        _check_packed(frames, frames["size"], "frames")
    frame_end = 0
    seen: dict[str, str] = {}
    next_tile = [0] * len(groups)
    group_values = [0] * len(groups)
    rebuilt = [0] * len(groups)
    for i, e in enumerate(entries):
        need(isinstance(e, dict), f"entry {i}")
        path = e.get("path")
        check_name(path)
        kind = e.get("kind")
        what = f"entry {path[:200]!r}"
        if path in seen:
            raise ArchiveError(f"duplicate entry name {path[:200]!r}")
        seen[path] = kind
        for key in ("perm", "mtime_ns"):
            if key in e:
                need(is_int(e[key], -(1 << 62)), f"{what}: bad {key}")
        if kind == "dir":
            pass
        elif kind == "symlink":
            t = e.get("target")
            need(_is_str(t) and t != "" and "\x00" not in t and _fs_bytes(t) is not None, f"{what}: bad symlink target")
        elif kind == "stored":
            need(is_int(e.get("size")), f"{what}: bad size")
            need(_is_checksum(e.get("sha256")), f"{what}: checksum missing")
            need(_is_str(e.get("why", ""), 4096), f"{what}: bad reason")
            payload.take(e.get("data"), what)
            _check_packed(e["data"], e["size"], what, version)
            if "image" in e:
                _check_image(e["image"], what, coded=False)
        elif kind == "image" and version >= 3:
            img = e.get("image")
            _check_image(img, what, coded=True)
            need(is_int(e.get("size")), f"{what}: bad size")
            need(_is_checksum(e.get("sha256")), f"{what}: checksum missing")
            need(_is_str(e.get("why", ""), 4096), f"{what}: bad reason")
            payload.take(e.get("data"), what)
            need(e["data"].get("codec") == "jxl" and set(e["data"]) == {"offset", "length", "codec"},
                 f"{what}: unknown pixel codec")
            values = img["width"] * img["height"] * (3 if img["mode"] == "RGB" else 1)
            need(values <= DIMS_FIXED + DIMS_PER_BIT * 8 * e["data"]["length"],
                 f"{what}: declares {values} pixel values from {e['data']['length']} bytes")
            frame_end += _check_recipe(e.get("rebuild"), img, what, version)
        elif kind == "model":
            gi = e.get("group")
            need(is_int(gi, 0, len(groups) - 1) if groups else False, f"{what}: bad group")
            img = e.get("image")
            _check_image(img, what, coded=True)
            need(is_int(e.get("size")), f"{what}: bad size")
            if version >= 3 and "rebuild" in e:
                # Rebuilt files are checked by their group's checksum, over all of them in order.
                need("sha256" not in e, f"{what}: a file checksum where its group's is the rule")
                rebuilt[gi] += 1
            else:
                need(_is_checksum(e.get("sha256")), f"{what}: checksum missing")
            need(_is_num(e.get("est_bits", 0)), f"{what}: bad est_bits")
            if version >= 2 and "rebuild" in e:
                need("meta" not in img, f"{what}: both a recipe and metadata")
                frame_end += _check_recipe(e["rebuild"], img, what, version)
            else:
                if version >= 2:
                    need(_is_checksum(e.get("pixels_sha256")), f"{what}: pixel checksum missing")
                _check_meta(img.get("meta", {}), what)
            model = groups[gi]["model"]
            c, th, tw = registry.spec(model).tile
            need(model in registry.routes_for(img["mode"], True), f"{what}: model {model} cannot code mode {img['mode']}")
            count = images.tile_count(img["width"], img["height"], (th, tw))
            if version >= 3:
                # Tile ranges follow from entry order and image sizes.
                need("tiles" not in e, f"{what}: tiles are implied in format 3")
            else:
                tiles = e.get("tiles")
                need(isinstance(tiles, list) and len(tiles) == 2 and all(is_int(t) for t in tiles), f"{what}: bad tiles")
                need(tiles[0] == next_tile[gi], f"{what}: tiles out of order")
                need(tiles[1] == count, f"{what}: tile count disagrees with size")
            next_tile[gi] += count
            need(next_tile[gi] <= groups[gi]["tiles"], f"{what}: more tiles than its group holds")
            group_values[gi] += img["width"] * img["height"] * c
        else:
            raise ArchiveError(f"{what}: unknown kind {str(kind)[:64]!r}")
    for gi, g in enumerate(groups):
        need(next_tile[gi] == g["tiles"], f"group {gi}: entries cover {next_tile[gi]} of {g['tiles']} tiles")
        need(("sha256" in g) == (rebuilt[gi] > 0), f"group {gi}: checksum of its rebuilt files missing or stray")
        problem = work_problem(group_values[gi], g["engine"].get("K", 0), g["payload"]["length"])
        if problem:
            raise ArchiveError(f"group {gi} ({g['model']}) declares far more than its payload can hold: {problem}")
    need(frame_end == (frames["size"] if frames is not None else 0), "frames do not add up to the frames blob")
    need(payload.end == payload_len, "payload area holds bytes no entry uses")
    # A file may not be the parent of another entry, and nothing may live under a symlink:
    # writing there would follow the link. Prefixes are cut at each '/', linear in the name.
    for path in seen:
        pos = path.find("/")
        while pos != -1:
            parent = path[:pos]
            if seen.get(parent, "dir") != "dir":
                raise ArchiveError(f"entry {path[:200]!r} lies under {parent[:200]!r}, which is a "
                                   f"{seen[parent]}, not a folder")
            pos = path.find("/", pos + 1)
