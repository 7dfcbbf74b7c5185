"""Rebuilding an image file byte for byte from its pixels.

A model codes pixels; a user keeps files. `plan` finds how a file's bytes follow from its
pixels: everything that is not pixel data is kept verbatim (the *frame*: every PNG chunk but
IDAT, in order, and whatever follows IEND; a PNM, BMP or TIFF header, its comments and any
trailing bytes), and the pixel data is described by a small *recipe* that regenerates it
exactly:

- PNG: each row's filter type (as its difference from the filter a minimum-sum rule would
  choose, libpng's or Pillow's, whichever predicts the file better, so that such a writer's
  files are all zero), the zlib settings (level, window,
  memory level, strategy) that reproduce the IDAT stream, its 2-byte header as written, and
  the IDAT chunk size. Most PNG writers use zlib with one of
  a handful of settings; which one is found by trial, each trial abandoned at its first byte
  that differs.
- PNM (binary), BMP (uncompressed), TIFF (uncompressed, strips in order): the raster's offset,
  sample layout, row stride and row order; padding bytes must be zero.

`plan` rebuilds the file from the recipe before trusting it and returns nothing unless the
bytes come back identical, so a file that no recipe reproduces (an unusual deflater,
interlacing, non-zero padding, compressed TIFF strips) is stored instead, never changed.
`rebuild` is the inverse, run on decompression; its output is checked against the file's
sha256 there, because a different zlib on the decoding machine could deflate differently.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: no data, its CRC
BARE_PNG_BYTES = 8 + 25 + 12  # what a bare frame leaves out: signature, IHDR, IEND
_PNG_TYPES = {"1": (1, 0), "L": (8, 0), "RGB": (8, 2)}  # mode -> (bit depth, colour type)
_PNG_MODES = {t: m for m, t in _PNG_TYPES.items()}
# Raw raster layouts Pillow reports for the modes a model codes (its rawmode names).
RASTER_LAYOUTS = ("L", "RGB", "BGR", "1", "1;I")
ZLIB_STRATEGIES = range(5)  # default, filtered, huffman only, rle, fixed
_CHUNK = 1 << 16


class NoPlan(Exception):
    """The file cannot be rebuilt from its pixels; the message says why."""


# ---- recipes -----------------------------------------------------------------------------------


def plan(data: bytes, img, pixels: np.ndarray) -> tuple[dict, bytes]:
    """(recipe, frame) that rebuild `data` from `pixels`, checked; NoPlan when there are none.

    `img` is the Pillow image opened on `data` *before* it was loaded (its tile list still
    tells where the raster lies); `pixels` are its canonical pixels (images.canonical).
    """
    if data.startswith(PNG_SIGNATURE):
        recipe, frame = _plan_png(data, pixels)
    else:
        recipe, frame = _plan_raster(data, img, pixels)
    if rebuild(pixels, recipe, frame) != data:
        raise NoPlan("the rebuilt file differs")
    return recipe, frame


def rebuild(pixels: np.ndarray, recipe: dict, frame: bytes) -> bytes:
    """The file bytes, from canonical pixels, a recipe from `plan` and its frame."""
    if recipe["kind"] == "png":
        return _rebuild_png(pixels, recipe, frame)
    if recipe["kind"] == "raster":
        return _rebuild_raster(pixels, recipe, frame)
    raise NoPlan(f"unknown recipe kind {recipe['kind']!r}")


def runs(values) -> list[list[int]]:
    """[[value, count], ...] of consecutive equal values."""
    out: list[list[int]] = []
    for v in values:
        v = int(v)
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def expand(pairs: list[list[int]]) -> list[int]:
    return [v for v, n in pairs for _ in range(n)]


# ---- raw rasters (PNM, BMP, TIFF) ----------------------------------------------------------


def row_bytes(width: int, mode: str) -> int:
    """Bytes of one unpadded row of samples: 1-bit packed, 8-bit grey, 8-bit RGB."""
    return (width + 7) // 8 if mode == "1" else width * (3 if mode == "RGB" else 1)


def _raster_rows(pixels: np.ndarray, layout: str) -> np.ndarray:
    """(H, row_bytes) uint8: the samples of each row as the layout packs them."""
    if layout in ("1", "1;I"):
        bits = pixels.astype(bool)
        if layout == "1;I":
            bits = ~bits
        return np.packbits(bits, axis=1)
    if layout == "L":
        return pixels.reshape(pixels.shape[0], -1)
    if layout in ("RGB", "BGR"):
        px = pixels if layout == "RGB" else pixels[:, :, ::-1]
        return np.ascontiguousarray(px).reshape(pixels.shape[0], -1)
    raise NoPlan(f"raster layout {layout!r}")


def _raster(pixels: np.ndarray, layout: str, stride: int, bottom_up: bool) -> bytes:
    rows = _raster_rows(pixels, layout)
    h, packed = rows.shape
    if stride < packed:
        raise NoPlan("row stride shorter than a row")
    out = np.zeros((h, stride), np.uint8)
    out[:, :packed] = rows
    if bottom_up:
        out = out[::-1]
    return out.tobytes()


def _plan_raster(data: bytes, img, pixels: np.ndarray) -> tuple[dict, bytes]:
    tiles = list(getattr(img, "tile", None) or [])
    if not tiles:
        raise NoPlan("no raster layout known")
    w, h = img.size
    offset, y, layout, stride, bottom_up = None, 0, None, None, None
    for t in tiles:
        name, box, off, args = t[0], t[1], t[2], t[3]
        if name != "raw":
            raise NoPlan(f"pixel data coded with {name!r}")
        mode, st, direction = (args, 0, 1) if isinstance(args, str) else (tuple(args) + (0, 1))[:3]
        if box != (0, y, w, box[3]) or mode not in RASTER_LAYOUTS:
            raise NoPlan("raster is not whole rows in order")
        if layout is None:
            layout, stride, bottom_up, offset = mode, st, direction == -1, off
        elif (mode, st, direction == -1) != (layout, stride, bottom_up):
            raise NoPlan("strips of different layouts")
        if off != offset + y * (stride or row_bytes(w, img.mode)):
            raise NoPlan("strips are not contiguous")
        y = box[3]
    if y != h or len(tiles) > 1 and bottom_up:
        raise NoPlan("raster does not cover the image")
    stride = stride or row_bytes(w, img.mode)
    end = offset + stride * h
    if end > len(data):
        raise NoPlan("raster runs past the end of the file")
    recipe = {"kind": "raster", "offset": int(offset), "layout": layout, "stride": int(stride),
              "bottom_up": bool(bottom_up)}
    return recipe, data[:offset] + data[end:]


def _rebuild_raster(pixels: np.ndarray, recipe: dict, frame: bytes) -> bytes:
    off = recipe["offset"]
    if off > len(frame):
        raise NoPlan("raster offset past the end of its frame")
    return frame[:off] + _raster(pixels, recipe["layout"], recipe["stride"], recipe["bottom_up"]) + frame[off:]


# ---- PNG ---------------------------------------------------------------------------------------


def _chunks(data: bytes):
    """(type, start, end) of every chunk after the signature; the rest after IEND is trailing."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise NoPlan("a PNG chunk runs past the end of the file")
        yield ctype, pos, end
        pos = end
        if ctype == b"IEND":
            return
    raise NoPlan("PNG without IEND")


def _png_rows(pixels: np.ndarray, mode: str) -> tuple[np.ndarray, int]:
    """Unfiltered scanlines (H, row_bytes) and the filter's bytes per pixel."""
    if mode == "1":
        return np.packbits(pixels.astype(bool), axis=1), 1
    if mode == "L":
        return pixels, 1
    return np.ascontiguousarray(pixels).reshape(pixels.shape[0], -1), 3


def _filter_all(rows: np.ndarray, bpp: int) -> np.ndarray:
    """(5, H, row_bytes) uint8: every row filtered by each of PNG's five filter types."""
    cur = rows.astype(np.int16)
    up = np.zeros_like(cur)
    up[1:] = cur[:-1]
    left = np.zeros_like(cur)
    left[:, bpp:] = cur[:, :-bpp]
    upleft = np.zeros_like(cur)
    upleft[1:, bpp:] = cur[:-1, :-bpp]
    pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    preds = np.stack([np.zeros_like(cur), left, up, (left + up) >> 1, paeth])
    return (cur[None] - preds).astype(np.uint8)


def _typed(filtered: np.ndarray, types: np.ndarray) -> bytes:
    """Scanlines from `_filter_all`'s five, each row by its type and prefixed with it."""
    _, h, n = filtered.shape
    types = np.asarray(types, dtype=np.uint8)
    out = np.empty((h, n + 1), np.uint8)
    out[:, 0] = types
    out[:, 1:] = filtered[types.astype(np.intp), np.arange(h)]
    return out.tobytes()


def _sums(filtered: np.ndarray) -> np.ndarray:
    """(rows, 5) from `_filter_all`'s five: each row's filtered bytes read as signed, summed."""
    return np.abs(filtered.view(np.int8).astype(np.int64)).sum(2).T


def filter_rows(rows: np.ndarray, types: np.ndarray, bpp: int) -> bytes:
    """PNG-filtered scanlines, each prefixed with its filter type."""
    return _typed(_filter_all(rows, bpp), types)


# The filters a writer's minimum-sum rule tries, in the order it breaks ties: libpng tries all
# five in type order; Pillow (without optimize) None, Up, Sub and Paeth, in that order.
FILTER_RULES = {"libpng": (0, 1, 2, 3, 4), "pillow": (0, 2, 1, 4)}


def filter_sums(rows: np.ndarray, bpp: int) -> np.ndarray:
    """(rows, 5): each row's sum of its filtered bytes read as signed, per filter type. Integer
    arithmetic: the same on every machine."""
    return _sums(_filter_all(rows, bpp))


def minsum_filters(sums: np.ndarray, rule: str = "libpng") -> np.ndarray:
    """Each row's filter by a minimum-sum heuristic over `filter_sums`: the smallest sum among
    the rule's filters, the first in its order on ties."""
    order = np.asarray(FILTER_RULES[rule])
    return order[np.argmin(sums[:, order], 1)].astype(np.uint8)


def _idat_size(lengths: list[int]) -> int | None:
    """The chunk size that cuts a stream into these IDAT lengths (0: one chunk), or None."""
    if len(lengths) == 1:
        return 0
    size = lengths[0]
    if all(n == size for n in lengths[:-1]) and 0 < lengths[-1] <= size:
        return size
    return None


def _zlib_candidates(cmf: int, flg: int):
    """zlib settings whose stream header would read (cmf, flg), likeliest first.

    The window is tried from the header's own size up to 32 KiB: libpng deflates with one
    window and then lowers the header's window field to the smallest that covers the image,
    so the header can name a smaller window than the one that made the stream."""
    if cmf & 0x0F != 8 or flg & 0x20 or (cmf * 256 + flg) % 31:
        return
    if (cmf >> 4) + 8 > 15:
        return
    windows = list(range(max((cmf >> 4) + 8, 9), 16))
    flevel = flg >> 6
    levels = {0: (1, 0), 1: (5, 4, 3, 2), 2: (6,), 3: (9, 7, 8)}[flevel]
    mems = (8, 9, 7, 6, 5, 4, 3, 2, 1)
    strategies = (0, 1, 4) if flevel else (0, 1, 2, 3, 4)
    for wbits in windows:
        for level in levels:
            for strategy in strategies:
                for mem in mems:
                    yield {"level": level, "wbits": wbits, "mem": mem, "strategy": strategy}
        if flevel == 0:  # huffman-only and rle write FLEVEL 0 at any level
            for strategy in (2, 3):
                for mem in mems:
                    yield {"level": 6, "wbits": wbits, "mem": mem, "strategy": strategy}


def deflate(raw: bytes, z: dict) -> bytes:
    c = zlib.compressobj(z["level"], zlib.DEFLATED, z["wbits"], z["mem"], z["strategy"])
    out = c.compress(raw) + c.flush()
    return bytes(z["header"]) + out[2:]


def _reproduces(raw: bytes, stream: bytes, z: dict) -> bool:
    """Does deflating `raw` with `z` give exactly `stream` after its 2-byte header? Gives up at
    the first byte that differs."""
    try:
        c = zlib.compressobj(z["level"], zlib.DEFLATED, z["wbits"], z["mem"], z["strategy"])
    except (ValueError, zlib.error):
        return False
    pos, skip = 0, 2
    for i in range(0, len(raw), _CHUNK):
        out = c.compress(raw[i:i + _CHUNK])
        if out[skip:] != stream[pos + skip:pos + len(out)]:
            return False
        skip = max(0, skip - len(out))
        pos += len(out)
    out = c.flush()
    return out[skip:] == stream[pos + skip:] and pos + len(out) == len(stream)


def find_zlib(raw: bytes, stream: bytes) -> dict:
    if len(stream) < 2:
        raise NoPlan("empty IDAT stream")
    for z in _zlib_candidates(stream[0], stream[1]):
        if _reproduces(raw, stream, z):
            return {**z, "header": [stream[0], stream[1]]}
    raise NoPlan("no zlib setting reproduces its IDAT stream")


def _plan_png(data: bytes, pixels: np.ndarray) -> tuple[dict, bytes]:
    chunks = list(_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR" or chunks[0][2] - chunks[0][1] != 25:
        raise NoPlan("PNG without a proper IHDR")
    s = chunks[0][1] + 8
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[s:s + 13])
    mode = _PNG_MODES.get((depth, ctype))
    if mode is None:
        raise NoPlan(f"PNG of bit depth {depth}, colour type {ctype}")
    if interlace:
        raise NoPlan("interlaced PNG")
    want = (h, w, 3) if mode == "RGB" else (h, w)
    if pixels.shape != want:
        raise NoPlan("pixels do not match the PNG's header")
    idat = [i for i, c in enumerate(chunks) if c[0] == b"IDAT"]
    if not idat or idat != list(range(idat[0], idat[-1] + 1)):
        raise NoPlan("IDAT chunks missing or not consecutive")
    first, last = chunks[idat[0]][1], chunks[idat[-1]][2]
    stream = b"".join(data[chunks[i][1] + 8:chunks[i][2] - 4] for i in idat)
    try:
        d = zlib.decompressobj()
        filtered = d.decompress(stream, len(pixels.tobytes()) * 2 + h + 64)
    except zlib.error:
        raise NoPlan("IDAT stream does not inflate") from None
    if not d.eof or d.unused_data:
        raise NoPlan("IDAT stream has bytes after its end")
    rows, bpp = _png_rows(pixels, mode)
    if len(filtered) != h * (rows.shape[1] + 1):
        raise NoPlan("IDAT stream holds another number of bytes than the image")
    types = np.frombuffer(filtered, np.uint8)[:: rows.shape[1] + 1].copy()
    if types.max(initial=0) > 4:
        raise NoPlan("unknown PNG filter type")
    # Filtered once for the check below and the filter rule's sums.
    every = _filter_all(rows, bpp)
    if _typed(every, types) != filtered:
        raise NoPlan("IDAT scanlines do not match the pixels")
    z = find_zlib(filtered, stream)
    size = _idat_size([chunks[i][2] - chunks[i][1] - 12 for i in idat])
    if size is None:
        raise NoPlan("IDAT chunks of uneven sizes")
    # Filter types as their difference from the rule that predicts them best (fewest runs).
    best, sums = None, _sums(every)
    for rule in FILTER_RULES:
        residual = runs((types.astype(np.int16) - minsum_filters(sums, rule)) % 5)
        if best is None or len(residual) < len(best[1]):
            best = rule, residual
    recipe = {"kind": "png", "mode": mode, "split": first, "filters": best[1], "zlib": z, "idat": size}
    if best[0] != "libpng":
        recipe["rule"] = best[0]
    frame = data[:first] + data[last:]
    head = _png_head(w, h, mode)
    if frame.startswith(head) and frame.endswith(PNG_END) and len(frame) >= len(head) + len(PNG_END):
        # Most files hold nothing but the chunks the image itself implies: keep only the rest.
        recipe["bare"] = True
        frame = frame[len(head):len(frame) - len(PNG_END)]
    return recipe, frame


def _png_head(width: int, height: int, mode: str) -> bytes:
    """The signature and the IHDR chunk of a non-interlaced PNG of this size and mode."""
    depth, ctype = _PNG_TYPES[mode]
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    return PNG_SIGNATURE + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


def _rebuild_png(pixels: np.ndarray, recipe: dict, frame: bytes) -> bytes:
    rows, bpp = _png_rows(pixels, recipe["mode"])
    residual = np.asarray(expand(recipe["filters"]), np.int16)
    if residual.shape != (rows.shape[0],):
        raise NoPlan("filter types do not cover the rows")
    every = _filter_all(rows, bpp)
    types = ((minsum_filters(_sums(every), recipe.get("rule", "libpng")) + residual) % 5).astype(np.uint8)
    stream = deflate(_typed(every, types), recipe["zlib"])
    size = recipe["idat"] or len(stream)
    parts = []
    for pos in range(0, len(stream), size):
        body = b"IDAT" + stream[pos:pos + size]
        parts.append(struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body)))
    if recipe.get("bare"):
        h, w = pixels.shape[:2]
        frame = _png_head(w, h, recipe["mode"]) + frame + PNG_END
    split = recipe["split"]
    if split > len(frame):
        raise NoPlan("IDAT position past the end of its frame")
    return frame[:split] + b"".join(parts) + frame[split:]
