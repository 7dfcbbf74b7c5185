"""`bbans bench`: coded size and speed of the BB-ANS methods beside generic lossless codecs.

Everything here takes arrays and models, not file names, so tests can feed it fixtures; the
click command in `bbans/cli/bench.py` only loads the data set and models and hands them
over.

Models: by default the one `bbans compress --model auto` picks for the data set's images (the
first registered, bundled model taking their alphabet: binary-mnist-hier, mnist-hier,
cifar10-hier), and beside it the single-latent (paper) model of the same data set, as an
ablation. Every row names its model; the default model's rows say so ("default": true), and the
summary names the row `bbans compress` gives with no options (the default model's refit encoder,
K = 0): the product's figure.

Methods (rows of the first table), for each model, all coded by the real engine and decoded back:
  baseline         amortized encoder trained with the decoder (K = 0)
  refit            amortized encoder refitted by reverse half-asleep (K = 0)
  baseline+K<k>    k Adam steps of optimal inference started from the baseline encoder
  refit+K<k>       the same from the refit encoder

Generic codecs (second table), on the same images:
  per-image   one file per image (PNG, WebP, JPEG-XL, JPEG-LS, JPEG 2000)
  canvas      all images tiled into one near-square grid, unused cells zero, one file
  raw-bytes   zstd / xz / bzip2 over the pixel bytes of all images, (N, C, H, W) order
Every generic figure is also decoded and compared, like ours. bits/dim always divides by the
N*C*H*W pixels of the images (canvas padding is charged to the codec).

Binary images: each generic codec gets the lowest bit depth it supports for bilevel data, which
is never worse for it than 0/255 bytes: PNG 1-bit grey, JPEG-XL and JPEG 2000 1 bit per sample,
JPEG-LS samples in {0, 1}, WebP (no grey or bilevel mode) 0/255 grey copied into R, G and B; the
byte compressors see one byte per pixel with value 0 or 1. The "input" field of each row says
which.

JSON written by --json (REPORT_KEYS at the top level; one METHOD_KEYS dict per entry of
"methods", one GENERIC_KEYS dict per entry of "generic"):
  schema            "bbans-bench/2" (2: several models per report, the default one marked;
                    1: one model, rows without "model")
  dataset, split    e.g. "mnist", "test"
  n_images          images benchmarked; n_available: images in the split (before --limit);
                    image_shape [C, H, W]; dims = n_images*C*H*W
  date              ISO 8601 local time with offset, when the run started
  argv              the exact command line (empty when called as a library)
  settings          models (list), model (the same, comma-separated: schema 1's key),
                    default_models (no --model given), K list, limit (null: all), device,
                    resolved_device, batch_size, lanes, threads, generic, data_dir (the command's options)
  engine_config     EngineConfig.to_dict() of the first model's K = 0 run
  machine           platform, processor, cpu_count, python, torch, torch_threads, numpy,
                    imagecodecs, pillow, gpu
  device            "cpu" or "cuda": where the engine's arithmetic ran
  torch             torch version
  default_model     the model `bbans compress --model auto` picks for these images
  models            by name, in table order: name, family, default (it is default_model),
                    encoders {encoder: {hash, test_bits_per_dim}} (from the checkpoint metadata)
  methods           per model and method: model, default (a row of default_model), method,
                    encoder, K, lr (K-step Adam rate), payload_bytes, bits_per_dim,
                    neg_elbo_bits_per_dim, discrete_neg_elbo_bits_per_dim, overhead_pct,
                    initial_bits, first_image_neg_elbo_bits (the engine's -ELBO of image 0,
                    which is coded before any bits come back), compress_s_per_image, decompress_s_per_image (wall clock,
                    time.perf_counter), compress_cpu_s_per_image, decompress_cpu_s_per_image
                    (process CPU time, all threads: steadier on a shared machine),
                    images_per_s, decompress_images_per_s (wall clock), time_rel_baseline,
                    decompress_time_rel_baseline (wall clock over the same model's K = 0
                    baseline's), exact
  skipped_methods   [{model, method, reason}] for methods that could not run (e.g. no refit encoder)
  generic           per codec and layout: codec, layout, input, settings, bytes,
                    bits_per_dim, compress_s_per_image, decompress_s_per_image, exact,
                    gap_vs_best_ours_bpd, skipped (null, or why the codec did not run)
  summary           default_model, default_method, default_bits_per_dim (the row `bbans
                    compress` gives with no options: default_model's refit encoder at K = 0;
                    null when it did not run), best_model, best_method, best_bits_per_dim,
                    best_generic, best_generic_bits_per_dim,
                    generic_ahead [{codec, layout, bits_per_dim, gap_bpd}], all_exact
  all_exact         True when every round trip (ours and generic) gave back the images
"""

from __future__ import annotations

import bz2
import datetime as _dt
import io
import json
import lzma
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bbans.errors import EXIT_MISMATCH, BBANSError

SCHEMA = "bbans-bench/2"
REPORT_KEYS = (
    "schema", "dataset", "split", "n_images", "n_available", "image_shape", "dims", "date", "argv", "settings",
    "engine_config", "machine", "device", "torch", "default_model", "models", "methods", "skipped_methods",
    "generic", "summary", "all_exact",
)
METHOD_KEYS = (
    "model", "default", "method", "encoder", "K", "lr", "payload_bytes", "bits_per_dim", "neg_elbo_bits_per_dim",
    "discrete_neg_elbo_bits_per_dim", "overhead_pct", "initial_bits", "first_image_neg_elbo_bits",
    "compress_s_per_image",
    "decompress_s_per_image", "compress_cpu_s_per_image", "decompress_cpu_s_per_image", "images_per_s",
    "decompress_images_per_s", "time_rel_baseline", "decompress_time_rel_baseline", "exact",
)
GENERIC_KEYS = (
    "codec", "layout", "input", "settings", "bytes", "bits_per_dim", "compress_s_per_image",
    "decompress_s_per_image", "exact", "gap_vs_best_ours_bpd", "skipped",
)
SUMMARY_KEYS = (
    "default_model", "default_method", "default_bits_per_dim", "best_model", "best_method", "best_bits_per_dim", "best_generic", "best_generic_bits_per_dim", "generic_ahead",
    "all_exact",
)

# JPEG-XL's top effort is slow (about 40 s for the 10,000 MNIST test images as one canvas on
# one core) but is still minutes, not hours, and it is the strongest generic codec here.
JXL_EFFORT = 10
# Images of the untimed K = 0 engine run before each encoder's rows (8 before K-step rows).
WARM_UP_IMAGES = 32
# The default run (default models, these K, generic codecs) takes a few minutes on a 2-core CPU
# with DEFAULT_LIMIT images (benchmarks/RESULTS.md, "bbans bench defaults (issue 20)").
DEFAULT_K = (0, 2)
DEFAULT_LIMIT = {"binary-mnist": 1000, "mnist": 2000, "cifar10": 200}

# The pixel alphabet of each data set's images, as `bbans compress` would see them in files.
_DATASET_MODE = {"binary-mnist": ("1", True), "mnist": ("L", False), "cifar10": ("RGB", False)}

# A progress sink: (label, done, total). Called with done == 0 when a stage starts.
Progress = Callable[[str, int, int], None]


class RoundTripError(BBANSError):
    """A benchmarked round trip did not give back the images: a bug, reported after the table."""

    exit_code = EXIT_MISMATCH


def _noop(label: str, done: int, total: int) -> None:
    pass


# ---- which models ----------------------------------------------------------------------------

def auto_model(dataset: str, bundled) -> str:
    """The model `bbans compress --model auto` picks for this data set's images: the first
    registered model taking their alphabet that is bundled."""
    from bbans.models import registry

    if dataset not in _DATASET_MODE:
        raise BBANSError(f"unknown data set {dataset!r}; choose one of {', '.join(_DATASET_MODE)}")
    have = set(bundled)
    for name in registry.routes_for(*_DATASET_MODE[dataset]):
        if name in have:
            return name
    raise BBANSError(f"no bundled model codes {dataset} images (see `bbans models`)")


def default_models(dataset: str, bundled) -> list[str]:
    """The models benched by default: `auto_model`, then the single-latent (paper) model of the
    same data set beside it (unless the auto choice is that model already, or it is not bundled)."""
    from bbans.models import registry

    first = auto_model(dataset, bundled)
    have = set(bundled)
    paper = [m.name for m in registry.MODELS
             if m.family == "paper" and m.dataset == dataset and m.name in have and m.name != first]
    return [first] + paper[:1]


def parse_model_list(values) -> tuple[str, ...]:
    """('a,b', 'c') -> ('a', 'b', 'c'): --model repeated or comma-separated; unique, in order."""
    from bbans.models import registry

    out: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            registry.spec(part)  # an unknown name is refused, naming the known ones
            if part not in out:
                out.append(part)
    return tuple(out)


def parse_k_list(text: str) -> tuple[int, ...]:
    """'0,1,2,5' -> (0, 1, 2, 5); sorted, unique, each >= 0."""
    out = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            k = int(part)
        except ValueError:
            raise BBANSError(f"--K takes comma-separated integers, got {part!r}") from None
        if k < 0:
            raise BBANSError(f"--K values must be >= 0, got {k}")
        out.add(k)
    if not out:
        raise BBANSError("--K needs at least one value")
    return tuple(sorted(out))


@dataclass(frozen=True)
class MethodSpec:
    name: str
    encoder: str
    K: int


def method_specs(ks, encoders=("baseline", "refit")) -> list[MethodSpec]:
    """The rows asked for. The baseline amortized row is always run: it is the time reference."""
    ks = sorted(set(int(k) for k in ks) | {0})
    specs = [MethodSpec(e, e, 0) for e in encoders if 0 in ks]
    for k in ks:
        if k > 0:
            specs += [MethodSpec(f"{e}+K{k}", e, k) for e in encoders]
    return specs


# ---- our methods ---------------------------------------------------------------------------

def _bpd(bits: float, dims: int) -> float:
    return float(bits) / dims if dims else float("nan")


def engine_config(model, k: int, engine_kwargs: dict):
    """EngineConfig for one method; the settings a model's bundle chooses (K-step rate, latent
    buckets, uncoded channels) are the model's own unless engine_kwargs name them."""
    from bbans.coding import engine

    return engine.EngineConfig(K=k, **{**engine.model_settings(model), **engine_kwargs})


def run_method(model, images: np.ndarray, spec: MethodSpec, engine_kwargs: dict, progress: Progress = _noop,
               model_name: str | None = None, default: bool = False) -> dict:
    """Compress with the real engine, decompress, compare; sizes from the real payload."""
    from bbans.coding import engine

    config = engine_config(model, spec.K, engine_kwargs)
    n = len(images)
    dims = int(images.size)
    stage = f"{model_name} {spec.name}" if model_name else spec.name
    label_c, label_d = f"{stage} compress", f"{stage} decompress"
    progress(label_c, 0, n)
    c0, t0 = time.process_time(), time.perf_counter()
    payload, stats = engine.compress(model, images, config=config, progress=lambda d, t: progress(label_c, d, t))
    t1, c1 = time.perf_counter(), time.process_time()
    progress(label_d, 0, n)
    c2, t2 = time.process_time(), time.perf_counter()
    decoded = engine.decompress(model, payload, n, tuple(images.shape[1:]), config=stats["config"],
                                  progress=lambda d, t: progress(label_d, d, t))
    t3, c3 = time.perf_counter(), time.process_time()
    exact = bool(decoded.shape == images.shape and np.array_equal(decoded, images))
    bits = 8 * len(payload)
    neg_elbo = _bpd(np.sum(stats["neg_elbo_bits"]), dims)
    discrete = stats.get("discrete_neg_elbo_bits")
    bpd = _bpd(bits, dims)
    c_s, d_s = (t1 - t0) / max(n, 1), (t3 - t2) / max(n, 1)
    return {
        "model": model_name,
        "default": bool(default),
        "method": spec.name,
        "encoder": spec.encoder,
        "K": spec.K,
        "lr": config.lr,
        "payload_bytes": len(payload),
        "bits_per_dim": bpd,
        "neg_elbo_bits_per_dim": neg_elbo,
        "discrete_neg_elbo_bits_per_dim": None if discrete is None else _bpd(np.sum(discrete), dims),
        "overhead_pct": 100.0 * (bpd - neg_elbo) / neg_elbo if neg_elbo > 0 else float("nan"),
        "initial_bits": int(stats.get("initial_bits", 0)),
        "first_image_neg_elbo_bits": _first(stats.get("image_neg_elbo_bits")),
        "compress_s_per_image": c_s,
        "decompress_s_per_image": d_s,
        "compress_cpu_s_per_image": (c1 - c0) / max(n, 1),
        "decompress_cpu_s_per_image": (c3 - c2) / max(n, 1),
        "images_per_s": 1.0 / c_s if c_s > 0 else float("inf"),
        "decompress_images_per_s": 1.0 / d_s if d_s > 0 else float("inf"),
        "time_rel_baseline": None,
        "decompress_time_rel_baseline": None,
        "exact": exact,
    }


def _first(values):
    # The first image is coded before any bits can come back: its -ELBO is listed on its own so a
    # reader can see how much it weighs in the total.
    if values is None or len(values) == 0:
        return None
    return float(values[0])


def _warm_up(model, images: np.ndarray, engine_kwargs: dict, k: int) -> None:
    # The first engine calls pay for lazy torch set-up; keep that out of the timed rows. A few
    # images are enough (the batch sizes the compressor picks depend on the message anyway).
    from bbans.coding import engine

    config = engine_config(model, k, engine_kwargs)
    few = images[: min(len(images), WARM_UP_IMAGES if k == 0 else 8)]
    payload, stats = engine.compress(model, few, config=config)
    engine.decompress(model, payload, len(few), tuple(few.shape[1:]), config=stats["config"])


def run_methods(images: np.ndarray, models: dict, ks, engine_kwargs: dict, progress: Progress = _noop,
                skipped: dict | None = None, model_name: str | None = None,
                default: bool = False) -> tuple[list[dict], list[dict]]:
    """Run every method of one model whose encoder is in `models` ({encoder: VAE}); returns
    (rows, skipped rows). time_rel_baseline divides by this model's K = 0 baseline row."""
    rows, skipped_rows = [], []
    warmed = set()
    for spec in method_specs(ks):
        model = models.get(spec.encoder)
        if model is None:
            why = (skipped or {}).get(spec.encoder, f"no {spec.encoder} encoder")
            skipped_rows.append({"model": model_name, "method": spec.name, "reason": why})
            continue
        key = (spec.encoder, spec.K > 0)
        if key not in warmed:
            _warm_up(model, images, engine_kwargs, min(spec.K, 1))
            warmed.add(key)
        rows.append(run_method(model, images, spec, engine_kwargs, progress, model_name, default))
    base = next((r for r in rows if r["method"] == "baseline"), None)
    if base is not None:
        for r in rows:
            r["time_rel_baseline"] = _ratio(r["compress_s_per_image"], base["compress_s_per_image"])
            r["decompress_time_rel_baseline"] = _ratio(r["decompress_s_per_image"], base["decompress_s_per_image"])
    return rows, skipped_rows


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


# ---- generic codecs ------------------------------------------------------------------------

def _imagecodecs():
    try:
        import imagecodecs

        return imagecodecs
    except ImportError:
        return None


@dataclass
class ImageCodec:
    """One image format: encode/decode a single (H, W) or (H, W, C) uint8 array."""

    name: str
    settings: str
    prepare: Callable[[np.ndarray], np.ndarray]  # (C, H, W) image of the data set -> codec input
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]
    input: str
    max_side: int = 1 << 30
    skipped: str | None = None


def _hwc(img: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) for grey, (H, W, C) interleaved for colour."""
    return np.ascontiguousarray(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1))


def _depth_words(channels: int) -> str:
    return "8-bit grey" if channels == 1 else "8-bit RGB, interleaved"


def image_codecs(channels: int, binary: bool) -> list[ImageCodec]:
    """The image formats, each with the input representation chosen for this data (see module doc)."""
    ic = _imagecodecs()
    out: list[ImageCodec] = []
    plain = _depth_words(channels)

    # PNG through Pillow: the reference encoder most users have.
    from PIL import Image

    def png_encode(a):
        buf = io.BytesIO()
        Image.fromarray(a.astype(bool) if binary else a).save(buf, format="PNG", optimize=True, compress_level=9)
        return buf.getvalue()

    def png_decode(b):
        return np.asarray(Image.open(io.BytesIO(b))).astype(np.uint8)

    out.append(ImageCodec("PNG", "Pillow optimize=True compress_level=9", _hwc, png_encode, png_decode,
                          "1-bit grey" if binary else plain))

    def need(name, flag):
        if ic is None:
            return "imagecodecs is not installed (pip install 'bbans[bench]')"
        codec = getattr(ic, flag, None)
        if codec is None or not codec.available:
            return f"this imagecodecs build has no {name} codec"
        return None

    # WebP stores ARGB only, so grey (and 0/255 bilevel) images go in as R = G = B.
    def webp_prep(img):
        a = _hwc(img * 255 if binary else img)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, -1)) if a.ndim == 2 else a

    out.append(ImageCodec(
        "WebP", "lossless method=6 quality=100", webp_prep,
        lambda a: ic.webp_encode(a, level=100, lossless=True, method=6),
        lambda b: ic.webp_decode(b),
        ("0/255 grey copied into RGB (WebP has no grey mode)" if binary else
         "8-bit grey copied into RGB (WebP has no grey mode)" if channels == 1 else plain),
        max_side=16383, skipped=need("WebP", "WEBP")))

    out.append(ImageCodec(
        "JPEG-XL", f"lossless effort={JXL_EFFORT} (libjxl via imagecodecs), 1 thread", _hwc,
        lambda a: ic.jpegxl_encode(a, lossless=True, effort=JXL_EFFORT, numthreads=1,
                                   **({"bitspersample": 1} if binary else {})),
        lambda b: ic.jpegxl_decode(b, numthreads=1),
        "1-bit grey (bitspersample=1)" if binary else plain, skipped=need("JPEG-XL", "JPEGXL")))

    out.append(ImageCodec(
        "JPEG-LS", "CharLS defaults (lossless, NEAR=0)", _hwc,
        lambda a: ic.jpegls_encode(a), lambda b: ic.jpegls_decode(b),
        "samples in {0, 1}" if binary else plain, max_side=65535, skipped=need("JPEG-LS", "JPEGLS")))

    def j2k_encode(a):
        kw = {"bitspersample": 1} if binary else {}
        return ic.jpeg2k_encode(a, reversible=True, codecformat=ic.JPEG2K.CODEC.J2K, numthreads=1, **kw)

    out.append(ImageCodec(
        "JPEG 2000", "OpenJPEG reversible 5/3 wavelet, raw J2K codestream (no JP2 boxes)", _hwc,
        j2k_encode, lambda b: ic.jpeg2k_decode(b, numthreads=1),
        "1 bit per sample" if binary else plain, skipped=need("JPEG 2000", "JPEG2K")))
    return out


@dataclass
class ByteCodec:
    name: str
    settings: str
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]
    skipped: str | None = None


def byte_codecs() -> list[ByteCodec]:
    ic = _imagecodecs()
    zstd = ByteCodec("zstd", "level 19", lambda b: b, lambda b: b)
    if ic is not None and getattr(ic, "ZSTD", None) is not None and ic.ZSTD.available:
        zstd.encode = lambda b: bytes(ic.zstd_encode(b, level=19))
        zstd.decode = lambda b: bytes(ic.zstd_decode(b))
        zstd.settings = "level 19 (imagecodecs)"
    else:
        try:
            import zstandard

            zstd.encode = lambda b: zstandard.ZstdCompressor(level=19).compress(b)
            zstd.decode = lambda b: zstandard.ZstdDecompressor().decompress(b)
            zstd.settings = "level 19 (zstandard)"
        except ImportError:
            zstd.skipped = "neither imagecodecs nor zstandard is installed"
    return [
        zstd,
        ByteCodec("xz", "lzma preset 9|EXTREME", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
                  lzma.decompress),
        ByteCodec("bzip2", "level 9", lambda b: bz2.compress(b, 9), bz2.decompress),
    ]


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of the near-square grid holding n cells."""
    rows = max(1, math.ceil(math.sqrt(n)))
    return rows, max(1, math.ceil(n / rows))


def tile(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> one (C, rows*H, cols*W) canvas, row-major cells, empty cells zero."""
    n, c, h, w = images.shape
    rows, cols = grid_shape(n)
    canvas = np.zeros((rows * cols, c, h, w), dtype=images.dtype)
    canvas[:n] = images
    return np.ascontiguousarray(canvas.reshape(rows, cols, c, h, w).transpose(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w))


def untile(canvas: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    c = canvas.shape[0]
    rows, cols = grid_shape(n)
    cells = canvas.reshape(c, rows, h, cols, w).transpose(1, 3, 0, 2, 4).reshape(rows * cols, c, h, w)
    return cells[:n]


def _result(codec, layout, input_, settings, nbytes, dims, n, c_s, d_s, exact, skipped=None) -> dict:
    return {
        "codec": codec, "layout": layout, "input": input_, "settings": settings,
        "bytes": nbytes, "bits_per_dim": None if nbytes is None else 8.0 * nbytes / dims,
        "compress_s_per_image": None if c_s is None else c_s / n,
        "decompress_s_per_image": None if d_s is None else d_s / n,
        "exact": exact, "gap_vs_best_ours_bpd": None, "skipped": skipped,
    }


def _same(decoded, expected: np.ndarray) -> bool:
    d = np.asarray(decoded)
    return d.size == expected.size and np.array_equal(d.reshape(expected.shape).astype(np.uint8), expected)


def run_generic(images: np.ndarray, binary: bool = False, progress: Progress = _noop,
                layouts=("per-image", "canvas", "raw-bytes")) -> list[dict]:
    """Every generic codec on the images; each figure decoded and compared."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, c, h, w = images.shape
    dims = int(images.size)
    rows: list[dict] = []
    for codec in image_codecs(c, binary):
        if "per-image" in layouts:
            label = f"{codec.name} per image"
            if codec.skipped:
                rows.append(_result(codec.name, "per-image", codec.input, codec.settings, None, dims, n, None, None,
                                    None, codec.skipped))
            else:
                progress(label, 0, n)
                prepared = [codec.prepare(img) for img in images]
                blobs, t0 = [], time.perf_counter()
                for i, a in enumerate(prepared):
                    blobs.append(codec.encode(a))
                    if (i + 1) % 64 == 0 or i + 1 == n:
                        progress(label, i + 1, n)
                t1 = time.perf_counter()
                decoded = [codec.decode(b) for b in blobs]
                t2 = time.perf_counter()
                exact = all(_same(d, a) for d, a in zip(decoded, prepared))
                rows.append(_result(codec.name, "per-image", codec.input, codec.settings, sum(map(len, blobs)), dims,
                                    n, t1 - t0, t2 - t1, exact))
        if "canvas" in layouts:
            label = f"{codec.name} canvas"
            rows_, cols_ = grid_shape(n)
            side = max(rows_ * h, cols_ * w)
            why = codec.skipped or (f"canvas {rows_ * h}x{cols_ * w} exceeds the format's {codec.max_side} pixel side"
                                    if side > codec.max_side else None)
            if why:
                rows.append(_result(codec.name, "canvas", codec.input, codec.settings, None, dims, n, None, None,
                                    None, why))
                continue
            progress(label, 0, 1)
            canvas = tile(images)
            a = codec.prepare(canvas)
            t0 = time.perf_counter()
            blob = codec.encode(a)
            t1 = time.perf_counter()
            d = codec.decode(blob)
            t2 = time.perf_counter()
            exact = _same(d, a) and np.array_equal(untile(canvas, n, h, w), images)
            progress(label, 1, 1)
            rows.append(_result(codec.name, "canvas", codec.input, f"{codec.settings}; {rows_}x{cols_} grid",
                                len(blob), dims, n, t1 - t0, t2 - t1, exact))
    if "raw-bytes" in layouts:
        raw = images.tobytes()
        input_ = ("one byte per pixel, value 0 or 1" if binary else "one byte per pixel") + ", (N, C, H, W) order"
        for codec in byte_codecs():
            if codec.skipped:
                rows.append(_result(codec.name, "raw-bytes", input_, codec.settings, None, dims, n, None, None, None,
                                    codec.skipped))
                continue
            label = f"{codec.name} raw bytes"
            progress(label, 0, 1)
            t0 = time.perf_counter()
            blob = codec.encode(raw)
            t1 = time.perf_counter()
            back = codec.decode(blob)
            t2 = time.perf_counter()
            progress(label, 1, 1)
            rows.append(_result(codec.name, "raw-bytes", input_, codec.settings, len(blob), dims, n, t1 - t0,
                                t2 - t1, back == raw))
    return rows


# ---- the whole report ----------------------------------------------------------------------

def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "imagecodecs": getattr(_imagecodecs(), "__version__", None),
        "pillow": _pillow_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def _pillow_version():
    try:
        import PIL

        return PIL.__version__
    except ImportError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _row_name(r: dict) -> str:
    return f"{r['model']} {r['method']}" if r.get("model") else r["method"]


def summarize(methods: list[dict], generic: list[dict], default_model: str | None = None) -> dict:
    ran = [g for g in generic if g["bits_per_dim"] is not None]
    best = min(methods, key=lambda r: r["bits_per_dim"]) if methods else None
    best_g = min(ran, key=lambda g: g["bits_per_dim"]) if ran else None
    # What `bbans compress` does with no options: the default model, refit encoder, K = 0.
    product = next((r for r in methods if r.get("model") == default_model and r["method"] == "refit"), None)
    ahead = []
    if best is not None:
        for g in ran:
            g["gap_vs_best_ours_bpd"] = g["bits_per_dim"] - best["bits_per_dim"]
            if g["bits_per_dim"] < best["bits_per_dim"]:
                ahead.append({"codec": g["codec"], "layout": g["layout"], "bits_per_dim": g["bits_per_dim"],
                              "gap_bpd": best["bits_per_dim"] - g["bits_per_dim"]})
    all_exact = all(r["exact"] for r in methods) and all(g["exact"] for g in ran)
    return {
        "default_model": default_model,
        "default_method": product["method"] if product else None,
        "default_bits_per_dim": product["bits_per_dim"] if product else None,
        "best_model": best.get("model") if best else None,
        "best_method": best["method"] if best else None,
        "best_bits_per_dim": best["bits_per_dim"] if best else None,
        "best_generic": f"{best_g['codec']} {best_g['layout']}" if best_g else None,
        "best_generic_bits_per_dim": best_g["bits_per_dim"] if best_g else None,
        "generic_ahead": ahead,
        "all_exact": all_exact,
    }


OVERALL = "all stages"


class _Overall:
    """Passes each stage's progress on, and reports OVERALL: stages done (fractions of the
    running ones included) out of all the run's stages, so a display can show the time left."""

    def __init__(self, progress: Progress, stages: int):
        self.progress, self.stages, self.done = progress, max(int(stages), 1), {}

    def __call__(self, label: str, done: int, total: int) -> None:
        self.progress(label, done, total)
        self.done[label] = min(done / total, 1.0) if total > 0 else 0.0
        self.progress(OVERALL, sum(self.done.values()), self.stages)


def _generic_stages(shape, binary: bool, layouts=("per-image", "canvas", "raw-bytes")) -> int:
    """How many progress stages `run_generic` reports for images of this (N, C, H, W) shape."""
    n, c, h, w = shape
    rows, cols = grid_shape(n)
    count = 0
    for codec in image_codecs(c, binary):
        if codec.skipped:
            continue
        count += ("per-image" in layouts) + ("canvas" in layouts and max(rows * h, cols * w) <= codec.max_side)
    if "raw-bytes" in layouts:
        count += sum(1 for codec in byte_codecs() if not codec.skipped)
    return count


def _by_model(models: dict, model_meta, skipped_encoders, dataset: str):
    """{name: {encoder: VAE}} (and its meta and skipped dicts) from either that shape or the
    one-model shape {encoder: VAE} (named by its meta, else after the data set)."""
    if models and all(isinstance(v, dict) for v in models.values()):
        return models, dict(model_meta or {}), dict(skipped_encoders or {})
    meta = dict(model_meta or {})
    name = next((m.get("name") for m in meta.values() if isinstance(m, dict) and m.get("name")), None) or dataset
    return {name: models}, {name: meta}, {name: dict(skipped_encoders or {})}


def run_bench(images: np.ndarray, models: dict, *, dataset: str, ks=DEFAULT_K, binary: bool | None = None,
              generic: bool = True, engine_kwargs: dict | None = None, progress: Progress = _noop,
              model_meta: dict | None = None, skipped_encoders: dict | None = None, split: str = "test",
              settings: dict | None = None, argv=None, default_model: str | None = None,
              n_available: int | None = None) -> dict:
    """The full report (see the module doc for its keys).

    images: uint8 (N, C, H, W) as the models take them (binary data in {0, 1}).
    models: {model name: {"baseline": VAE, "refit": VAE}} in table order, or one model's
    {"baseline": VAE, "refit": VAE}; a missing encoder skips its rows, with the reason from
    skipped_encoders ({name: {encoder: why}}, or {encoder: why} for one model). model_meta: the
    checkpoint metadata, {name: {encoder: meta}} (or {encoder: meta}). default_model: the model
    `bbans compress --model auto` picks for these images (default: the first model given); its
    rows are marked. engine_kwargs: EngineConfig fields other than K. n_available: images in the
    split before any limit (default: these).
    """
    import torch

    from bbans.coding import engine

    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or len(images) == 0:
        raise BBANSError(f"bench needs a non-empty (N, C, H, W) image array, got shape {images.shape}")
    if binary is None:
        binary = dataset == "binary-mnist"
    models, model_meta, skipped_encoders = _by_model(models, model_meta, skipped_encoders, dataset)
    if default_model is None and models:
        default_model = next(iter(models))
    engine_kwargs = dict(engine_kwargs or {})
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    stages = sum(2 * sum(1 for sp in method_specs(ks) if sp.encoder in encs) for encs in models.values())
    stages += _generic_stages(images.shape, binary) if generic else 0
    overall = _Overall(progress, stages)
    methods, skipped = [], []
    for name, encoders in models.items():
        rows, skips = run_methods(images, encoders, ks, engine_kwargs, overall, skipped_encoders.get(name), name,
                                  name == default_model)
        methods += rows
        skipped += skips
    generic_rows = run_generic(images, binary, overall) if generic else []
    summary = summarize(methods, generic_rows, default_model)
    device = engine_kwargs.get("device", "cpu")
    first = next((m for encs in models.values() for m in encs.values()), None)
    return {
        "schema": SCHEMA,
        "dataset": dataset,
        "split": split,
        "n_images": int(len(images)),
        "n_available": int(len(images) if n_available is None else n_available),
        "image_shape": list(images.shape[1:]),
        "dims": int(images.size),
        "date": date,
        "argv": list(argv) if argv is not None else [],
        "settings": dict(settings or {"K": list(ks), "generic": generic, **engine_kwargs}),
        "engine_config": engine_config(first, 0, engine_kwargs).to_dict() if first is not None
        else engine.EngineConfig(K=0, **engine_kwargs).to_dict(),
        "machine": machine_info(),
        "device": device,
        "torch": torch.__version__,
        "default_model": default_model,
        "models": {name: _model_record(name, model_meta.get(name) or {}, name == default_model) for name in models},
        "methods": methods,
        "skipped_methods": skipped,
        "generic": generic_rows,
        "summary": summary,
        "all_exact": summary["all_exact"],
    }


def _model_record(name: str, meta: dict, default: bool) -> dict:
    from bbans.models import registry

    family = registry.spec(name).family if name in registry.NAMES else None
    return {"name": name, "family": family, "default": bool(default),
            "encoders": {enc: {k: m.get(k) for k in ("hash", "test_bits_per_dim")} for enc, m in meta.items()
                         if isinstance(m, dict)}}


def check_exact(report: dict) -> None:
    """Raise after the report is out if any round trip failed: the numbers would be meaningless."""
    bad = [_row_name(r) for r in report["methods"] if not r["exact"]]
    bad += [f"{g['codec']} {g['layout']}" for g in report["generic"] if g["exact"] is False]
    if bad:
        raise RoundTripError(f"round trip not exact for: {', '.join(bad)}")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json(report: dict) -> str:
    """The report as the text --json writes (indented, a final newline)."""
    return json.dumps(report, indent=2, default=_json_default, allow_nan=True) + "\n"


def write_json(report: dict, path) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(report))


# ---- terminal table ------------------------------------------------------------------------

def _f(v, fmt: str, none: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, fmt)


def _secs(v) -> str:
    if v is None:
        return "-"
    if v >= 0.1:
        return f"{v:.3f}"
    if v >= 1e-3:
        return f"{v * 1e3:.2f}m"
    return f"{v * 1e6:.1f}µ"


def _model_name(report: dict) -> str:
    """The models of a report, the default one marked; schema 1 reports keyed models by encoder."""
    models = report.get("models") or {}
    default = report.get("default_model")
    names = []
    for key, m in models.items():
        name = m.get("name") if isinstance(m, dict) else None
        name = name or key
        if name not in names and name not in ("baseline", "refit"):
            names.append(name)
    if not names:
        return report["dataset"]
    return ", ".join(f"{n} (default)" if n == default else n for n in names)


def _images_words(report: dict) -> str:
    n, avail = report["n_images"], report.get("n_available")
    if avail is not None and avail > n:
        return f"first {n} of {avail} images"
    return f"{n} images"


def _model_cell(r: dict, default: str | None, report: dict | None = None) -> str:
    m = r.get("model")
    if m is None:
        # A schema 1 report: one model, named in its settings.
        m = ((report or {}).get("settings") or {}).get("model")
        return m if isinstance(m, str) and m else "-"
    return f"{m} (default)" if r.get("default") or (default is not None and m == default) else m


DEFAULT_NOTE = ("(default) = the model `bbans compress` picks for these images (--model auto); its refit row "
                "at K = 0 is what compress does with no options")


def render(report: dict, console=None) -> None:
    """Print both tables and the summary with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    c, h, w = report["image_shape"]
    default = report.get("default_model")
    t = Table(title=f"bbans bench: {report['dataset']} {report['split']}, {_images_words(report)} of {c}x{h}x{w}, "
                    f"models {_model_name(report)}, device {report['device']}", title_justify="left")
    for col, just in (("model", "left"), ("method", "left"), ("K", "right"), ("bits/dim", "right"),
                      ("-ELBO", "right"), ("overhead", "right"), ("comp s/img", "right"), ("decomp s/img", "right"),
                      ("img/s", "right"), ("time ×base", "right"), ("exact", "center")):
        t.add_column(col, justify=just)
    prev = None
    for r in report["methods"]:
        if prev is not None and r.get("model") != prev:
            t.add_section()
        prev = r.get("model")
        t.add_row(_model_cell(r, default, report), r["method"], str(r["K"]), _f(r["bits_per_dim"], ".4f"),
                  _f(r["neg_elbo_bits_per_dim"], ".4f"),
                  _f(r["overhead_pct"], "+.2f") + "%", _secs(r["compress_s_per_image"]),
                  _secs(r["decompress_s_per_image"]), _f(r["images_per_s"], ".1f"),
                  _f(r["time_rel_baseline"], ".2f"), "yes" if r["exact"] else "[bold red]NO[/]")
    for s in report["skipped_methods"]:
        t.add_row(s.get("model") or "-", s["method"], "", "[dim]skipped[/]", "", "", "", "", "", "",
                  f"[dim]{s['reason']}[/]")
    if report["methods"] or report["skipped_methods"]:
        console.print(t)
        console.print("[dim]µ/m = micro/milli seconds; img/s = images compressed per second (wall clock); "
                      "time ×base = compress time relative to the same model's baseline encoder (K = 0)[/]")
        if default:
            console.print(f"[dim]{DEFAULT_NOTE}[/]")
    if report["generic"]:
        best = report["summary"]["best_bits_per_dim"]
        g = Table(title="generic lossless codecs on the same images", title_justify="left")
        for col, just in (("codec", "left"), ("layout", "left"), ("bits/dim", "right"),
                          ("vs best of ours", "right"), ("comp s/img", "right"), ("decomp s/img", "right"),
                          ("exact", "center"), ("input", "left")):
            g.add_column(col, justify=just)
        for r in report["generic"]:
            if r["skipped"]:
                g.add_row(r["codec"], r["layout"], "[dim]skipped[/]", "", "", "", "", f"[dim]{r['skipped']}[/]")
                continue
            gap = r["gap_vs_best_ours_bpd"]
            if gap is None:
                vs = "-"
            elif gap < 0:
                vs = f"[bold yellow]{gap:+.4f} (ahead of ours by {-gap / best * 100:.1f}%)[/]"
            else:
                vs = f"{gap:+.4f} ({gap / best * 100:+.0f}%)"
            g.add_row(r["codec"], r["layout"], _f(r["bits_per_dim"], ".4f"), vs, _secs(r["compress_s_per_image"]),
                      _secs(r["decompress_s_per_image"]), "yes" if r["exact"] else "[bold red]NO[/]", r["input"])
        console.print(g)
    for line in summary_lines(report):
        console.print(line)
    for line in machine_lines(report):
        console.print(f"[dim]{line}[/]")


def machine_lines(report: dict) -> list[str]:
    """When and where the run was, from the report's own records (none for a bare report)."""
    m = report.get("machine")
    if not m:
        return []
    run = [f"run {report['date']}"] if report.get("date") else []
    threads = (report.get("engine_config") or {}).get("threads")
    run += [f"engine threads {threads}"] if threads is not None else []
    parts = [f"{m.get('cpu_count')} CPUs {m.get('processor')}", m.get("platform"), f"python {m.get('python')}",
             f"torch {m.get('torch')}", f"numpy {m.get('numpy')}", f"imagecodecs {m.get('imagecodecs')}",
             f"pillow {m.get('pillow')}"]
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    return ([", ".join(run)] if run else []) + [f"machine: {', '.join(parts)}"]


def summary_lines(report: dict, markup: bool = True) -> list[str]:
    """The sentences under the tables (rich markup unless markup is False)."""
    s = report["summary"]
    lines = []
    yellow, red, end = ("[yellow]", "[bold red]", "[/]") if markup else ("", "", "")
    if s.get("default_bits_per_dim") is not None:
        lines.append(f"default (bbans compress, no options): {s['default_model']} {s['default_method']} at "
                     f"{s['default_bits_per_dim']:.4f} bits/dim")
    if s["best_method"] is not None:
        best = f"{s['best_model']} {s['best_method']}" if s.get("best_model") else s["best_method"]
        line = f"best of ours: {best} at {s['best_bits_per_dim']:.4f} bits/dim"
        if s["best_generic"]:
            line += f"; best generic: {s['best_generic']} at {s['best_generic_bits_per_dim']:.4f}"
        lines.append(line)
        if s["generic_ahead"]:
            for a in s["generic_ahead"]:
                lines.append(f"{yellow}{a['codec']} ({a['layout']}) is ahead of ours by {a['gap_bpd']:.4f} "
                             f"bits/dim{end}")
        elif report["generic"]:
            lines.append("every generic codec is above ours")
    if not s["all_exact"]:
        lines.append(f"{red}a round trip was NOT exact{end}")
    return lines


# ---- plot ----------------------------------------------------------------------------------

_COLORS = {"baseline": "tab:blue", "refit": "tab:orange"}
# Further models (after the default one) get these instead, so every (model, encoder) is its own colour.
_MORE_COLORS = [{"baseline": "tab:green", "refit": "tab:red"}, {"baseline": "tab:purple", "refit": "tab:brown"},
                {"baseline": "tab:cyan", "refit": "tab:olive"}]


def _groups(methods: list[dict]):
    """(label prefix, encoder, colour, rows sorted by K) for each model and encoder, in table order."""
    models = []
    for r in methods:
        if r.get("model") not in models:
            models.append(r.get("model"))
    for i, m in enumerate(models):
        colors = _COLORS if i == 0 else _MORE_COLORS[(i - 1) % len(_MORE_COLORS)]
        for enc in ("baseline", "refit"):
            rows = sorted((r for r in methods if r.get("model") == m and r["encoder"] == enc), key=lambda r: r["K"])
            if rows:
                yield (f"{m} {enc}" if m and len(models) > 1 else enc), enc, colors[enc], rows


def plot(report: dict, path) -> None:
    """Two panels: bits/dim against K (generic codecs as reference lines), and against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    generic = [g for g in report["generic"] if g["bits_per_dim"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    title = (f"{report['dataset']} {report['split']}, {_images_words(report)}, models {_model_name(report)}, "
             f"device {report['device']}")
    fig.suptitle(title)

    ours = [r["bits_per_dim"] for r in methods]
    for name, enc, col, rows in _groups(methods):
        amort = next((r for r in rows if r["K"] == 0), None)
        if amort is not None:
            ax1.axhline(amort["bits_per_dim"], color=col, ls="--", lw=1, label=f"{name} encoder (amortized)")
        ks = [r["K"] for r in rows]
        if any(k > 0 for k in ks):
            ax1.plot(ks, [r["bits_per_dim"] for r in rows], "o-", color=col, label=f"{name} + K-step inference")
            ax1.plot(ks, [r["neg_elbo_bits_per_dim"] for r in rows], ":", color=col, lw=1, alpha=0.8,
                     label=f"{name} + K-step: -ELBO")
        elif amort is not None:
            ax1.plot([0], [amort["bits_per_dim"]], "o", color=col)
    ax1.set_xlabel("K (optimal-inference steps)")
    ax1.set_ylabel("coded bits/dim")
    ax1.set_title("bits/dim against K")
    # Generic codecs far above ours would flatten our curves: the axis shows every codec below
    # ours and the first one above, and the codecs beyond it are listed under the figure.
    drawn, off = [], []
    if ours:
        elbos = [r["neg_elbo_bits_per_dim"] for r in methods if r["neg_elbo_bits_per_dim"] is not None]
        lo, hi = min(ours + elbos), max(ours)
        span = max(hi - lo, 0.02 * hi)
        ranked = sorted(generic, key=lambda g: g["bits_per_dim"])
        above = [g["bits_per_dim"] for g in ranked if g["bits_per_dim"] > hi]
        top = hi + span
        if above:
            top = max(top, min(above[0] + 0.3 * span, hi + 8 * span))
        drawn = [g for g in ranked if g["bits_per_dim"] <= top]
        off = [g for g in ranked if g not in drawn]
        bottom = min([lo] + [g["bits_per_dim"] for g in drawn]) - 0.3 * span
        ax1.set_ylim(max(0.0, bottom), top)
        for i, g in enumerate(drawn):
            ax1.axhline(g["bits_per_dim"], color="0.45", lw=1, ls="-.")
            # Alternate label positions so codecs with nearly equal rates stay readable.
            ax1.annotate(f"{g['codec']} {g['layout']} {g['bits_per_dim']:.3f}", (1.0 - 0.45 * (i % 2), g["bits_per_dim"]),
                         xycoords=("axes fraction", "data"), xytext=(-3, 2), textcoords="offset points",
                         ha="right", va="bottom", fontsize=7, color="0.3")
    if off:
        fig.text(0.01, 0.01, "generic codecs above the left panel's axis: "
                 + ", ".join(f"{g['codec']} {g['layout']} {g['bits_per_dim']:.3f}" for g in off),
                 fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)
    ax1.legend(fontsize=7, loc="best")
    ax1.grid(alpha=0.3)

    for name, enc, col, rows in _groups(methods):
        ax2.plot([r["compress_s_per_image"] for r in rows], [r["bits_per_dim"] for r in rows], "o-",
                 color=col, label=f"{name} (+ K steps)")
        dy = 4 if enc == "refit" else -10
        for r in rows:
            ax2.annotate(f"K={r['K']}", (r["compress_s_per_image"], r["bits_per_dim"]), fontsize=7,
                         color=col, xytext=(3, dy), textcoords="offset points")
    markers = {"per-image": "s", "canvas": "D", "raw-bytes": "^"}
    for g in generic:
        ax2.plot([g["compress_s_per_image"]], [g["bits_per_dim"]], markers.get(g["layout"], "x"), color="0.45",
                 ms=5)
        ax2.annotate(f"{g['codec']} {g['layout']}", (g["compress_s_per_image"], g["bits_per_dim"]), fontsize=6,
                     color="0.3", xytext=(3, -8), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("compression seconds per image (log)")
    ax2.set_ylabel("bits/dim (log)")
    ax2.set_title("bits/dim against compression time (grey: generic codecs)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout(rect=(0, 0.05 if off else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- Markdown (for benchmarks/RESULTS.md) ----------------------------------------------------

def to_markdown(report: dict) -> str:
    """The two tables and the summary as GitHub Markdown, figures formatted as `render` prints them."""
    lines = []
    default = report.get("default_model")
    if report["methods"]:
        lines += ["| model | method | K | coded bits/dim | -ELBO bits/dim | overhead | compress s/img | "
                  "decompress s/img | images/s | time × baseline | exact |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
        for r in report["methods"]:
            lines.append(f"| {_model_cell(r, default, report)} | {r['method']} | {r['K']} | {_f(r['bits_per_dim'], '.4f')} | "
                         f"{_f(r['neg_elbo_bits_per_dim'], '.4f')} | {_f(r['overhead_pct'], '+.2f')}% | "
                         f"{_secs(r['compress_s_per_image'])} | {_secs(r['decompress_s_per_image'])} | "
                         f"{_f(r['images_per_s'], '.1f')} | {_f(r['time_rel_baseline'], '.2f')} | "
                         f"{'yes' if r['exact'] else '**NO**'} |")
        for s in report["skipped_methods"]:
            lines.append(f"| {s.get('model') or '-'} | {s['method']} | | skipped: {s['reason']} | | | | | | | |")
        lines += ["", "s/img: seconds per image, m = milli, µ = micro; " + DEFAULT_NOTE + ".", ""]
    if report["generic"]:
        lines += ["| codec | layout | bits/dim | vs best of ours | compress s/img | decompress s/img | exact | input |",
                  "| --- | --- | ---: | ---: | ---: | ---: | :---: | --- |"]
        best = report["summary"]["best_bits_per_dim"]
        for g in report["generic"]:
            if g["skipped"]:
                lines.append(f"| {g['codec']} | {g['layout']} | skipped: {g['skipped']} | | | | | |")
                continue
            gap = g["gap_vs_best_ours_bpd"]
            vs = "-" if gap is None else (f"**{gap:+.4f} (ahead of ours by {-gap / best * 100:.1f}%)**" if gap < 0 else
                                          f"{gap:+.4f} ({gap / best * 100:+.0f}%)")
            lines.append(f"| {g['codec']} | {g['layout']} | {_f(g['bits_per_dim'], '.4f')} | {vs} | "
                         f"{_secs(g['compress_s_per_image'])} | {_secs(g['decompress_s_per_image'])} | "
                         f"{'yes' if g['exact'] else '**NO**'} | {g['input']} |")
        lines.append("")
    summary = summary_lines(report, markup=False)
    summary += machine_lines(report)
    if summary:
        lines += [s + "  " for s in summary[:-1]] + summary[-1:] + [""]
    return "\n".join(lines)

