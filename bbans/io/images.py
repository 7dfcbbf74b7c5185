"""Reading and writing image files, choosing a model for each, and cutting images into tiles.

An image goes to a model only when bbans can later give back the file itself, byte for byte:
`probe` asks `rebuild.plan` for a recipe that regenerates the file from its pixels and checks it
by rebuilding. With `keep="pixels"` (opt-in) an image no recipe reproduces may still be coded
when a rewrite by Pillow reads back with exactly the same pixels, mode, size and metadata; that
promise is checked too, by rewriting the image with the same writer decompression will use.
Anything that fails the checks, or that no model serves, is stored as its raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from bbans.io import rebuild
from bbans.models.registry import routes_for, spec

# Formats Pillow writes back without loss, in which a model-coded image is restored. Everything
# else (GIF, WebP, JPEG, ...) is lossy, palette-based or rewritten differently, so it is stored.
LOSSLESS_FORMATS = ("PNG", "BMP", "TIFF", "PPM")

# info keys that describe how the file was encoded, not the image; a rewrite may change them.
_ENCODING_INFO = {
    "PNG": {"interlace"},
    "BMP": {"compression"},
    "TIFF": {"compression"},
    "PPM": set(),
}
# TIFF compressions Pillow writes without loss; a TIFF keeps its own when it is one of these.
_TIFF_LOSSLESS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits", "group3", "group4"}
# TIFF tags that only describe the storage layout; a rewrite may change them.
_TIFF_LAYOUT_TAGS = {254, 259, 266, 273, 278, 279, 284, 317, 322, 323, 324, 325}

# Pillow refuses images above twice this many pixels; bbans never decodes anything larger.
MAX_PIXELS = 1 << 28


@dataclass
class Probe:
    """What bbans learned about one input file."""

    is_image: bool
    format: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None  # (width, height)
    pixels: np.ndarray | None = None  # canonical pixels (see `canonical`), None when stored
    meta: dict = field(default_factory=dict)  # JSON-able metadata the writer puts back (keep="pixels")
    recipe: dict | None = None  # how the file's bytes follow from its pixels (rebuild.plan)
    frame: bytes = b""  # the file's bytes that are not pixel data, for the recipe
    routes: tuple[str, ...] = ()  # models that may code it, best first
    reason: str = ""  # why it cannot be model-coded (empty when it can)

    @property
    def image_desc(self) -> str:
        if not self.is_image:
            return "not an image"
        return f"{self.format} {self.mode} {self.size[0]}x{self.size[1]}"


def canonical(img) -> np.ndarray:
    """Pixels as uint8 in the layout checksums are taken over: (H, W) or (H, W, 3); mode 1 as 0/1."""
    arr = np.asarray(img)
    if img.mode == "1":
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def pixel_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _ppm_maxval(data: bytes) -> int | None:
    """The maxval of a PGM/PPM header (None for bitmaps P1/P4)."""
    magic = data[:2]
    if magic in (b"P1", b"P4"):
        return None
    tokens: list[bytes] = []
    i = 2
    while len(tokens) < 3 and i < min(len(data), 4096):
        c = data[i : i + 1]
        if c == b"#":
            while i < len(data) and data[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(data) and not data[j : j + 1].isspace() and data[j : j + 1] != b"#":
                j += 1
            tokens.append(data[i:j])
            i = j
    try:
        return int(tokens[2])
    except (IndexError, ValueError):
        return -1


def _sample_depth_ok(fmt: str, mode: str, data: bytes, img) -> bool:
    """True when the file stores 8-bit samples (1-bit for mode 1), so the pixel values Pillow
    reads are the file's own samples, not ones it scaled from another depth."""
    want = 1 if mode == "1" else 8
    if fmt == "PNG":
        return len(data) > 24 and data[24] == want
    if fmt == "PPM":
        maxval = _ppm_maxval(data)
        return maxval is None if mode == "1" else maxval == 255
    if fmt == "TIFF":
        bits = img.tag_v2.get(258, (1,) if mode == "1" else (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return all(b == want for b in bits)
    return True  # BMP: Pillow reads 1- and 8-bit samples as they are, other depths are not L/1


def _extract_meta(img, fmt: str) -> tuple[dict, str]:
    """Metadata the writer can put back, or a reason why some of it cannot be."""
    meta: dict = {}
    text_keys: set[str] = set()
    if fmt == "PNG":
        texts = []
        for key, value in img.text.items():
            lang = getattr(value, "lang", None)
            tkey = getattr(value, "tkey", None)
            if lang is not None or tkey is not None:
                texts.append([key, str(value), "i", lang or "", tkey or ""])
            else:
                texts.append([key, str(value), "t"])
            text_keys.add(key)
        if texts:
            meta["text"] = texts
    if fmt == "TIFF" and img.info.get("compression") in _TIFF_LOSSLESS:
        meta["compression"] = img.info["compression"]
    for key, value in img.info.items():
        if key in _ENCODING_INFO[fmt] or key in text_keys:
            continue
        if key == "icc_profile" and isinstance(value, bytes):
            if value:
                meta["icc"] = _b64(value)
        elif key == "dpi" and fmt == "TIFF" and 282 not in img.tag_v2:
            pass  # Pillow reports (1, 1) for a TIFF without resolution tags; write none either
        elif key == "dpi" and isinstance(value, tuple) and len(value) == 2:
            meta["dpi"] = [float(v) for v in value]
        elif key == "resolution" and fmt == "TIFF":
            pass  # TIFF mirrors dpi here; the writer derives it back from dpi
        elif fmt == "PNG" and key == "exif" and isinstance(value, bytes):
            meta["exif"] = _b64(value)
        elif fmt == "PNG" and key == "transparency" and isinstance(value, (int, tuple)):
            meta["transparency"] = value if isinstance(value, int) else list(value)
        elif fmt == "PNG" and key == "gamma":
            meta["gamma"] = round(float(value) * 100000)
        elif fmt == "PNG" and key == "srgb":
            meta["srgb"] = int(value)
        elif fmt == "PNG" and key == "chromaticity":
            meta["chromaticity"] = [round(float(v) * 100000) for v in value]
        elif fmt == "PNG" and key == "aspect":
            meta["aspect"] = [int(v) for v in value]
        else:
            return {}, f"{fmt} metadata {key!r} that bbans does not rewrite"
    return meta, ""


def encode(pixels: np.ndarray, mode: str, fmt: str, meta: dict) -> bytes:
    """Write canonical pixels as a `fmt` file carrying `meta`."""
    from PIL import Image, PngImagePlugin

    if mode == "1":
        img = Image.fromarray(pixels.astype(bool))
    else:
        img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if img.mode != mode:
        raise ValueError(f"pixels give mode {img.mode}, want {mode}")
    kw: dict = {}
    if "icc" in meta:
        kw["icc_profile"] = _unb64(meta["icc"])
    if "dpi" in meta:
        kw["dpi"] = tuple(meta["dpi"])
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for item in meta.get("text", []):
            if item[2] == "i":
                info.add_itxt(item[0], item[1], lang=item[3], tkey=item[4])
            else:
                info.add_text(item[0], item[1])
        if "gamma" in meta:
            info.add(b"gAMA", struct.pack(">I", meta["gamma"]))
        if "srgb" in meta:
            info.add(b"sRGB", bytes([meta["srgb"]]))
        if "chromaticity" in meta:
            info.add(b"cHRM", struct.pack(">8I", *meta["chromaticity"]))
        if "aspect" in meta:
            info.add(b"pHYs", struct.pack(">IIB", *meta["aspect"], 0))
        kw["pnginfo"] = info
        if "exif" in meta:
            kw["exif"] = _unb64(meta["exif"])
        if "transparency" in meta:
            t = meta["transparency"]
            kw["transparency"] = t if isinstance(t, int) else tuple(t)
        kw["compress_level"] = 9
    elif fmt == "TIFF":
        kw["compression"] = meta.get("compression", "tiff_adobe_deflate")
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _comparable(img, fmt: str) -> tuple:
    """Everything about an opened image that a rewrite must keep."""
    info = {k: v for k, v in img.info.items() if k not in _ENCODING_INFO[fmt] and k != "resolution"}
    texts = {}
    if fmt == "PNG":
        for k, v in img.text.items():
            texts[k] = (str(v), getattr(v, "lang", None), getattr(v, "tkey", None))
    tags = {}
    if fmt == "TIFF":
        tags = {k: v for k, v in img.tag_v2.items() if k not in _TIFF_LAYOUT_TAGS}
        # Spec defaults, so a tag left out and the same tag written out compare equal.
        tags.setdefault(258, (1,))
        tags.setdefault(277, 1)
        tags[258] = tuple(tags[258]) if isinstance(tags[258], tuple) else (tags[258],)
    return img.format, img.mode, img.size, info, texts, tags


def _open(data: bytes):
    from PIL import Image

    with warnings.catch_warnings():
        # Oversized images are refused below by our own limit, with a clear reason.
        warnings.simplefilter("ignore")
        img = Image.open(io.BytesIO(data))
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise ValueError("image too large")
        img.load()
    return img


KEEP = ("bytes", "pixels")


def probe(data: bytes, keep: str = "bytes") -> Probe:
    """Open `data` as an image and decide whether a model may code it.

    keep="bytes": only when the file can be rebuilt byte for byte from its pixels.
    keep="pixels": also when a rewrite keeps pixels, mode, size and metadata.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            fmt, mode, size = img.format, img.mode, img.size
            frames = getattr(img, "n_frames", 1)
    except Image.DecompressionBombError:
        return Probe(is_image=True, reason="image too large to decode safely")
    except Exception:  # Pillow raises many types for non-images; all mean "not an image"
        return Probe(is_image=False, reason="not an image")
    p = Probe(is_image=True, format=fmt, mode=mode, size=size)
    if frames != 1:
        p.reason = f"{frames}-frame image"
        return p
    if mode not in ("1", "L", "RGB"):
        p.reason = f"mode {mode} (no model codes it)"
        return p
    if fmt not in LOSSLESS_FORMATS:
        p.reason = f"{fmt} file (restored byte for byte, not rewritten)"
        return p
    if size[0] * size[1] == 0 or size[0] * size[1] > MAX_PIXELS:
        p.reason = f"size {size[0]}x{size[1]}"
        return p
    try:
        loaded = _open(data)
        pixels = canonical(loaded)
    except Exception as exc:
        p.reason = f"unreadable image ({type(exc).__name__})"
        return p
    if not _sample_depth_ok(fmt, mode, data, loaded):
        p.reason = f"{fmt} with other than {'1' if mode == '1' else '8'}-bit samples"
        return p
    try:
        p.recipe, p.frame = rebuild.plan(data, img, pixels)
    except rebuild.NoPlan as exc:
        if keep != "pixels":
            p.reason = f"cannot be rebuilt byte for byte from its pixels ({exc})"
            return p
        why = _rewrite_problem(data, loaded, pixels, fmt, mode, p)
        if why:
            p.reason = why
            return p
    except Exception as exc:  # a malformed file the decoder accepted: store it as it is
        p.reason = f"cannot be rebuilt byte for byte from its pixels ({type(exc).__name__})"
        return p
    binary = mode == "1" or bool(np.all((pixels == 0) | (pixels == 255)))
    p.pixels, p.routes = pixels, routes_for(mode, binary)
    return p


def _rewrite_problem(data: bytes, img, pixels: np.ndarray, fmt: str, mode: str, p: Probe) -> str:
    """Why a Pillow rewrite would not keep the image identical ("" when it would; p.meta set)."""
    meta, why = _extract_meta(img, fmt)
    if why:
        return why
    # The promise made on decompression, checked now: the rewrite reads back identically.
    try:
        again = _open(encode(pixels, mode, fmt, meta))
        same = _comparable(again, fmt) == _comparable(img, fmt) and np.array_equal(canonical(again), pixels)
    except Exception as exc:
        same, why = False, type(exc).__name__
    if not same:
        return f"rewriting it as {fmt} would not keep it identical{f' ({why})' if why else ''}"
    p.meta = meta
    return ""


def to_model(pixels: np.ndarray, mode: str, model: str) -> np.ndarray:
    """Canonical pixels -> (C, H, W) uint8 in the model's alphabet (binary models take 0/1)."""
    kind = spec(model).alphabet
    if kind == "binary":
        return (pixels != 0).astype(np.uint8)[None]
    if kind == "grey":
        return (pixels * 255 if mode == "1" else pixels).astype(np.uint8)[None]
    if kind == "rgb":
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
    raise ValueError(f"unknown model {model!r}")


def from_model(arr: np.ndarray, mode: str, model: str) -> np.ndarray:
    """Inverse of `to_model`."""
    kind = spec(model).alphabet
    if kind == "binary":
        return (arr[0] * (1 if mode == "1" else 255)).astype(np.uint8)
    if kind == "grey":
        return (arr[0] // 255 if mode == "1" else arr[0]).astype(np.uint8)
    if kind == "rgb":
        return np.ascontiguousarray(arr.transpose(1, 2, 0)).astype(np.uint8)
    raise ValueError(f"unknown model {model!r}")


def tile_count(width: int, height: int, tile_hw: tuple[int, int]) -> int:
    th, tw = tile_hw
    return -(-height // th) * -(-width // tw)


def tile(arr: np.ndarray, tile_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) -> tiles (n, C, th, tw) row-major, zero padded, and mask (n, th, tw) of real pixels."""
    c, h, w = arr.shape
    th, tw = tile_hw
    rows, cols = -(-h // th), -(-w // tw)
    canvas = np.zeros((c, rows * th, cols * tw), np.uint8)
    canvas[:, :h, :w] = arr
    real = np.zeros((rows * th, cols * tw), bool)
    real[:h, :w] = True
    tiles = canvas.reshape(c, rows, th, cols, tw).transpose(1, 3, 0, 2, 4).reshape(-1, c, th, tw)
    mask = real.reshape(rows, th, cols, tw).transpose(0, 2, 1, 3).reshape(-1, th, tw)
    return np.ascontiguousarray(tiles), np.ascontiguousarray(mask)


def tile_mask(width: int, height: int, tile_hw: tuple[int, int]) -> np.ndarray:
    """The mask `tile` gives for an image of this size, from the size alone (for decoding)."""
    _, mask = tile(np.zeros((1, height, width), np.uint8), tile_hw)
    return mask


def untile(tiles: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of `tile`: (n, C, th, tw) -> (C, H, W)."""
    n, c, th, tw = tiles.shape
    rows, cols = -(-height // th), -(-width // tw)
    if n != rows * cols:
        raise ValueError(f"{n} tiles for a {width}x{height} image")
    canvas = tiles.reshape(rows, cols, c, th, tw).transpose(2, 0, 3, 1, 4).reshape(c, rows * th, cols * tw)
    return np.ascontiguousarray(canvas[:, :height, :width])
