"""The `.bb` archive: a tree of files, images coded by VAE models, the rest stored (docs/FORMAT.md).

Three layers:
- the container: `pack` builds the bytes, `Reader` checks them (magic, version, lengths, the
  trailing sha256, the header's schema and every entry name) before anything is allocated or
  written;
- `create`: walks input paths, routes each file (images.probe), codes the tiles of each model
  group in one engine call, stores everything else with LZMA2;
- `decode_entries` / `verify` / `extract`: the mirror image. `extract` decodes into a staging
  folder and only then moves the result into place, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bbans import __version__, images, rebuild, schema
from bbans.errors import ANSError, ArchiveError, BBANSError, MismatchError

MAGIC = b"BBANS\x00"
FORMAT_VERSION = 2
# magic, format version, header length (compressed), header length (JSON), payload length
_PREAMBLE = struct.Struct("<6sHIIQ")
PREAMBLE_SIZE = _PREAMBLE.size  # 24
TRAILER_SIZE = 32  # sha256 of everything before it
OVERHEAD_FIXED = PREAMBLE_SIZE + TRAILER_SIZE
HEADER_DICT = 1 << 20
# Per-entry checksums are the first 8 bytes of a sha256: they catch decoding that went wrong
# (the trailing full sha256 already catches corruption), and a full digest would cost more
# than the model spends on a small image.
CHECKSUM_HEX = schema.CHECKSUM_HEX
LZMA_MAX_RATIO = schema.LZMA_MAX_RATIO
LZMA_MAX_DICT = schema.LZMA_MAX_DICT
STAGING_PREFIX = schema.STAGING_PREFIX
check_name = schema.check_name
work_problem = schema.work_problem

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Warn = Callable[[str], None]


def _noop_progress(stage: str, done: int, total: int) -> None:
    pass


def _noop_warn(msg: str) -> None:
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


def pack(header: dict, blobs: list[bytes], version: int = FORMAT_VERSION) -> bytes:
    """Archive bytes: preamble, LZMA2-compressed JSON header, the blobs back to back, sha256."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    head = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(HEADER_DICT))
    payload_len = sum(len(b) for b in blobs)
    h = hashlib.sha256()
    out = io.BytesIO()
    for part in (_PREAMBLE.pack(MAGIC, version, len(head), len(raw), payload_len), head, *blobs):
        h.update(part)
        out.write(part)
    out.write(h.digest())
    return out.getvalue()


def unpack(data: bytes) -> tuple[int, dict, bytes]:
    """(format version, header, payload area) of archive bytes, unchecked: the inverse of `pack`
    for tools and tests that take archives apart. `Reader` is the checked way in."""
    _, version, head_len, raw_len, payload_len = _PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    head = data[PREAMBLE_SIZE:PREAMBLE_SIZE + head_len]
    raw = lzma.decompress(head, format=lzma.FORMAT_RAW, filters=_lzma_filters(HEADER_DICT, None))
    start = PREAMBLE_SIZE + head_len
    return version, json.loads(raw), data[start:start + payload_len]


class _Blobs:
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

    def __init__(self, source: str | os.PathLike | bytes):
        self.name = "<memory>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
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
        pre = f.read(PREAMBLE_SIZE)
        if len(pre) < 8 or pre[:6] != MAGIC:
            raise ArchiveError(f"{self.name}: not a bbans archive (bad magic)")
        version = struct.unpack("<H", pre[6:8])[0]
        if version > FORMAT_VERSION:
            raise ArchiveError(
                f"{self.name}: made by a newer bbans (format {version}); this bbans "
                f"{__version__} reads formats {', '.join(map(str, schema.FORMATS_READ))}"
            )
        if version not in schema.FORMATS_READ:
            raise ArchiveError(f"{self.name}: unknown archive format {version}")
        if len(pre) < PREAMBLE_SIZE:
            raise ArchiveError(f"{self.name}: truncated ({size} bytes, shorter than the preamble)")
        _, _, head_len, raw_len, payload_len = _PREAMBLE.unpack(pre)
        want = OVERHEAD_FIXED + head_len + payload_len
        if want > size:
            raise ArchiveError(f"{self.name}: truncated (declares {want} bytes, file has {size})")
        if want < size:
            raise ArchiveError(f"{self.name}: {size - want} unexpected bytes after the end of the archive")
        # The checksum first: every later check may then assume the bytes are as written.
        h = hashlib.sha256(pre)
        left = size - PREAMBLE_SIZE - TRAILER_SIZE
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise ArchiveError(f"{self.name}: truncated while reading")
            h.update(chunk)
            left -= len(chunk)
        if f.read(TRAILER_SIZE) != h.digest():
            raise ArchiveError(f"{self.name}: checksum mismatch (the archive is corrupt)")
        if raw_len > min(schema.MAX_HEADER_JSON, LZMA_MAX_RATIO * head_len + 4096):
            raise ArchiveError(f"{self.name}: header declares {raw_len} bytes from {head_len} compressed")
        f.seek(PREAMBLE_SIZE)
        try:
            raw = b"".join(unstore_chunks(f.read(head_len), {"codec": "lzma2", "dict_size": HEADER_DICT}, raw_len))
        except ArchiveError:
            raise ArchiveError(f"{self.name}: header does not decompress") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ArchiveError(f"{self.name}: header is not valid JSON") from None
        self.header_len, self.payload_len = head_len, payload_len
        self.payload_start = PREAMBLE_SIZE + head_len
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
        return OVERHEAD_FIXED + self.header_len


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


# ---- reading the inputs ----------------------------------------------------------------------


@dataclass
class _Input:
    path: str  # archive name
    kind: str  # "file" | "dir" | "symlink"
    source: str  # where it was found
    st: os.stat_result
    target: str = ""


@dataclass
class Scan:
    items: list[_Input] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why)


def _portable_name_problem(name: str) -> str:
    try:
        check_name(name)
    except ArchiveError as exc:
        return str(exc)
    return ""


def scan(roots: list[str], exclude: set[str] | None = None) -> Scan:
    """Walk the inputs. A folder root contributes its contents (names relative to it); a file
    root contributes its base name. Symlinks named on the command line are followed; symlinks
    inside folders are recorded as links. Two inputs mapping to one name is an error."""
    exclude = exclude or set()
    out = Scan()
    owner: dict[str, _Input] = {}

    def add(item: _Input) -> None:
        prev = owner.get(item.path)
        if prev is not None:
            if prev.kind == "dir" and item.kind == "dir":
                return  # two roots sharing a subfolder: merged
            raise BBANSError(
                f"two inputs would both be stored as {item.path!r}: {prev.source} and {item.source}; "
                "compress them into separate archives or rename one"
            )
        problem = _portable_name_problem(item.path)
        if problem:
            out.skipped.append((item.source, f"name cannot be stored portably ({problem})"))
            return
        owner[item.path] = item
        out.items.append(item)

    def walk(folder: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as it:
                names = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            raise BBANSError(f"cannot list {folder}: {exc.strerror}") from None
        for d in names:
            src = os.path.join(folder, d.name)
            name = f"{prefix}{d.name}"
            try:
                st = os.lstat(src)
            except OSError as exc:
                raise BBANSError(f"cannot read {src}: {exc.strerror}") from None
            if os.path.realpath(src) in exclude and not stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISLNK(st.st_mode):
                add(_Input(name, "symlink", src, st, os.readlink(src)))
            elif stat.S_ISDIR(st.st_mode):
                add(_Input(name, "dir", src, st))
                walk(src, name + "/")
            elif stat.S_ISREG(st.st_mode):
                add(_Input(name, "file", src, st))
            else:
                out.skipped.append((src, _special_kind(st.st_mode)))

    for root in roots:
        try:
            st = os.stat(root)  # follows a symlink named on the command line
        except FileNotFoundError:
            raise BBANSError(f"{root}: no such file or folder") from None
        except OSError as exc:
            raise BBANSError(f"{root}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            walk(root, "")
        elif stat.S_ISREG(st.st_mode):
            name = os.path.basename(os.path.normpath(os.path.abspath(root)))
            if os.path.realpath(root) not in exclude:
                # Read through the link the user named; files inside folders are never followed.
                add(_Input(name, "file", os.path.realpath(root), st))
        else:
            out.skipped.append((root, _special_kind(st.st_mode)))
    out.items.sort(key=lambda i: i.path)
    return out


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (fifo) skipped"
    if stat.S_ISSOCK(mode):
        return "socket skipped"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file skipped"
    return "special file skipped"


def _read_regular(path: str) -> bytes:
    """Read a file that must still be a regular file; never blocks on a fifo swapped in."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BBANSError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BBANSError(f"{path} changed into a non-regular file while reading")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---- models ----------------------------------------------------------------------------------


def available_models() -> dict[str, dict]:
    """Bundled models by name; empty when the checkpoint module or the weights are absent."""
    try:
        from bbans import checkpoints
    except ImportError:
        return {}
    try:
        return {m["name"]: m for m in checkpoints.list_models()}
    except BBANSError:
        return {}


class _Models:
    """Loads each (model, encoder) once."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def get(self, name: str, encoder: str, device: str):
        key = (name, encoder, device)
        if key not in self.cache:
            from bbans import checkpoints

            self.cache[key] = checkpoints.load_model(name, encoder=encoder, device=device)
        return self.cache[key]


def _versions() -> dict:
    import numpy
    import torch

    return {"bbans": __version__, "numpy": numpy.__version__, "torch": torch.__version__}


# ---- create ----------------------------------------------------------------------------------


@dataclass
class Options:
    model: str = "auto"  # "auto", "none" or a model name
    encoder: str = "refit"
    K: int = 0
    device: str = "auto"
    batch_size: int = 256
    lanes: int | None = None  # None: auto_lanes
    seed: int = 0
    keep: str = "bytes"  # "bytes": files come back byte for byte; "pixels": pixels and metadata


def auto_lanes(coded_dims: int) -> int:
    """Each lane ends as an 8-byte head in the payload, but the engine walks the values in
    steps of `lanes`: as few lanes as keep that walk under ~512 steps, between 8 and 128."""
    lanes = 8
    while lanes < 128 and lanes * 512 < coded_dims:
        lanes *= 2
    return lanes


def _route(probes: dict[str, images.Probe], allowed: set[str]) -> dict[str, str]:
    """path -> the first model in the image's preference list that may be used."""
    chosen = {}
    for path, p in probes.items():
        usable = [m for m in p.routes if m in allowed]
        if usable:
            chosen[path] = usable[0]
    return chosen


def create(roots: list[str], opts: Options, progress: Progress = _noop_progress, warn: Warn = _noop_warn,
           exclude: set[str] | None = None) -> tuple[bytes, dict]:
    """Build an archive of `roots`. Returns (archive bytes, report)."""
    sc = scan(roots, exclude)
    for src, why in sc.skipped:
        warn(f"{src}: {why}")
    have = available_models() if opts.model != "none" else {}
    if opts.model not in ("auto", "none"):
        if opts.model not in images.TILES:
            raise BBANSError(f"unknown model {opts.model!r}; choose auto, none, {', '.join(images.TILES)}")
        if opts.model not in have:
            raise BBANSError(f"model {opts.model!r} is not bundled with this bbans (see `bbans models`)")
    allowed = set(have) if opts.model == "auto" else ({opts.model} & set(have))
    notes: list[str] = []

    files = [i for i in sc.items if i.kind == "file"]
    entries: list[dict] = []
    datas: dict[str, bytes] = {}
    probes: dict[str, images.Probe] = {}
    full_hashes: dict[str, str] = {}
    for n, item in enumerate(files):
        progress("reading", n, len(files))
        datas[item.path] = _read_regular(item.source)
        full_hashes[item.path] = hashlib.sha256(datas[item.path]).hexdigest()
        probes[item.path] = images.probe(datas[item.path], opts.keep)
    progress("reading", len(files), len(files))

    device = opts.device
    models = _Models()
    unusable: dict[str, str] = {name: "is not bundled" for name in images.TILES if name not in have}
    while True:
        chosen = _route(probes, allowed - set(unusable))
        needed = sorted(set(chosen.values()))
        if needed:
            from bbans import bitsback

            device = bitsback.resolve_device(opts.device)
        failed = False
        for name in needed:
            try:
                models.get(name, opts.encoder, device)
            except BBANSError as exc:
                if opts.model != "auto":
                    raise
                unusable[name] = f"could not be loaded ({exc})"
                failed = True
        if not failed:
            break
    missing: dict[tuple[str, str], int] = {}
    for path, p in probes.items():
        if not p.routes:
            continue
        if path in chosen and (opts.model != "auto" or chosen[path] == p.routes[0]):
            continue
        if opts.model == "none":
            p.reason = "--model none"
        elif opts.model != "auto":
            p.reason = f"not served by --model {opts.model}"
        else:
            want = p.routes[0]
            went = f"coded with {chosen[path]}" if path in chosen else "stored with LZMA2"
            p.reason = f"model {want} {unusable[want]}"
            missing[(want, went)] = missing.get((want, went), 0) + 1
    for (name, went), count in sorted(missing.items()):
        notes.append(f"model {name} {unusable[name]}: {count} image(s) {went} instead")

    # Model groups, in the order of first use over the sorted entries: deterministic.
    group_order: list[str] = []
    for path in sorted(chosen):
        if chosen[path] not in group_order:
            group_order.append(chosen[path])

    groups: list[dict] = []
    blobs = _Blobs()
    tile_plan: dict[str, tuple[int, int, int]] = {}  # path -> (group, start, count)
    est_bits: dict[str, float] = {}
    if group_order:
        from bbans import bitsback

        versions = _versions()
        for name in group_order:
            c, th, tw = images.TILES[name]
            members = [p for p in sorted(chosen) if chosen[p] == name]
            tiles_l, masks_l, counts = [], [], []
            for path in members:
                pr = probes[path]
                t, m = images.tile(images.to_model(pr.pixels, pr.mode, name), (th, tw))
                tiles_l.append(t)
                masks_l.append(m)
                counts.append(len(t))
            tiles = np.concatenate(tiles_l)
            mask = np.concatenate(masks_l)
            masked = not bool(mask.all())
            model, meta = models.get(name, opts.encoder, device)
            lanes = opts.lanes or auto_lanes(int(mask.sum()) * c)
            config = bitsback.EngineConfig(K=opts.K, lr=bitsback.default_lr(model), seed=opts.seed, lanes=lanes,
                                           batch_size=opts.batch_size, device=device)
            stage = f"coding {len(members)} image(s) with {name}"
            payload, stats = bitsback.compress(
                model, tiles, mask if masked else None, config,
                progress=lambda done, total, s=stage: progress(s, done, total),
            )
            coded_dims = int(mask.sum()) * c
            problem = work_problem(coded_dims, opts.K, len(payload))
            if problem:
                # The reader refuses such a group (it could be a decompression bomb), so the
                # writer never makes one: these images are nearly blank and LZMA2 stores them well.
                for path in members:
                    probes[path].reason = f"model {name} codes it below the archive's floor ({problem})"
                    probes[path].routes = ()
                continue
            gi = len(groups)
            per_tile = np.asarray(stats["image_neg_elbo_bits"], dtype=float)
            start = 0
            for path, count in zip(members, counts):
                tile_plan[path] = (gi, start, count)
                est_bits[path] = float(per_tile[start:start + count].sum())
                start += count
            groups.append({
                "model": name,
                "model_hash": meta["hash"],
                "encoder": opts.encoder,
                "engine": stats["config"].to_dict(),
                "tiles": int(len(tiles)),
                "masked": masked,
                "coded_dims": coded_dims,
                "payload": blobs.add(payload),
                "versions": versions,
                "fingerprint": bitsback.fingerprint(config),
                "neg_elbo_bits": float(stats["neg_elbo_bits"]),
                "phantom_peak": int(stats["phantom_peak"]),
            })

    # The bytes of model-coded files that are not pixels, one LZMA2 blob for all of them, in
    # entry order (each recipe records only its frame's length).
    frames = [probes[p].frame for p in sorted(tile_plan) if probes[p].recipe is not None]
    frames_entry = None
    if frames:
        blob, spec = store(b"".join(frames))
        frames_entry = {**blobs.add(blob), **spec, "size": sum(map(len, frames)),
                        "zlib_version": zlib.ZLIB_RUNTIME_VERSION}

    stored_n = 0
    n_stored_total = sum(1 for i in files if i.path not in tile_plan)
    for item in sc.items:
        e: dict = {"path": item.path, "kind": item.kind if item.kind != "file" else ""}
        if item.kind == "symlink":
            e["target"] = item.target
            entries.append(e)
            continue
        e["perm"] = stat.S_IMODE(item.st.st_mode) & 0o777
        e["mtime_ns"] = item.st.st_mtime_ns
        if item.kind == "dir":
            entries.append(e)
            continue
        data = datas.pop(item.path)
        pr = probes.pop(item.path)
        e["size"] = len(data)
        if item.path in tile_plan:
            gi, start, count = tile_plan[item.path]
            e["kind"] = "model"
            e["group"] = gi
            e["tiles"] = [start, count]
            e["image"] = {"format": pr.format, "mode": pr.mode, "width": pr.size[0], "height": pr.size[1]}
            e["sha256"] = checksum(data)
            if pr.recipe is not None:
                # The rebuilt file's checksum covers its pixels too.
                e["rebuild"] = {**pr.recipe, "frame": len(pr.frame)}
            else:
                e["pixels_sha256"] = images.pixel_sha256(pr.pixels)[:CHECKSUM_HEX]
                e["image"]["meta"] = pr.meta
            # The -ELBO estimate of a tiny image can come out below zero; a share cannot.
            e["est_bits"] = max(0, int(round(est_bits[item.path])))
        else:
            progress("storing", stored_n, n_stored_total)
            stored_n += 1
            blob, spec = store(data)
            e["kind"] = "stored"
            e["sha256"] = checksum(data)
            e["data"] = {**blobs.add(blob), **spec}
            e["why"] = pr.reason or "not an image"
            if pr.is_image and pr.mode and pr.size:
                e["image"] = {"format": pr.format, "mode": pr.mode, "width": pr.size[0], "height": pr.size[1]}
        entries.append(e)
    progress("storing", n_stored_total, n_stored_total)

    # Payload order must be header order (groups, then entries): the reader insists on it.
    header = {
        "format": FORMAT_VERSION,
        "created_by": {"bbans": __version__},
        "device": device if group_order else None,
        "groups": groups,
        "entries": entries,
    }
    if frames_entry is not None:
        header["frames"] = frames_entry
    archive = pack(header, blobs.parts)
    report = describe_header(header, len(archive), len(archive) - blobs.end)
    report["skipped"] = [{"source": s, "why": w} for s, w in sc.skipped]
    report["notes"] = notes
    report["sha256"] = full_hashes
    return archive, report


# ---- describing ------------------------------------------------------------------------------


def _dims(img: dict | None) -> int:
    if not img:
        return 0
    return img["width"] * img["height"] * (3 if img["mode"] == "RGB" else 1)


def describe_header(header: dict, archive_bytes: int, header_bytes: int) -> dict:
    """Sizes and rates per entry and per model group (what `info` and `compress` print)."""
    groups = []
    for g in header["groups"]:
        plen = g["payload"]["length"]
        dims = g.get("coded_dims") or 0
        eng = g.get("engine", {})
        groups.append({
            "model": g["model"], "model_hash": g["model_hash"], "encoder": g["encoder"],
            "K": eng.get("K"), "device": eng.get("device"), "lanes": eng.get("lanes"),
            "batch_size": eng.get("batch_size"), "tiles": g["tiles"], "payload_bytes": plen,
            "coded_dims": dims, "bits_per_dim": (8 * plen / dims) if dims else None,
            "versions": g.get("versions", {}),
        })
    entries = []
    input_bytes = 0
    for e in header["entries"]:
        row = {"path": e["path"], "kind": e["kind"]}
        if e["kind"] == "symlink":
            row["target"] = e["target"]
        if e["kind"] in ("model", "stored"):
            input_bytes += e["size"]
            row["size"] = e["size"]
            dims = _dims(e.get("image"))
            if e["kind"] == "model":
                g = header["groups"][e["group"]]
                gd = g.get("coded_dims") or 0
                # The group payload is one message; an entry's share is its ELBO-based estimate
                # scaled so the shares add up to the payload.
                total_est = sum(x.get("est_bits", 0) for x in header["entries"]
                                if x["kind"] == "model" and x["group"] == e["group"])
                if total_est > 0:
                    share = 8 * g["payload"]["length"] * e.get("est_bits", 0) / total_est
                else:
                    share = 8 * g["payload"]["length"] * (dims / gd if gd else 0)
                row["coded_bytes"] = share / 8
                row["how"] = g["model"]
                if "rebuild" not in e:
                    row["why"] = "restored as a rewrite: same pixels, mode, size and metadata, not the same bytes"
            else:
                row["coded_bytes"] = e["data"]["length"]
                row["how"] = e["data"]["codec"]
                row["why"] = e.get("why", "")
            if dims:
                row["bits_per_dim"] = 8 * row["coded_bytes"] / dims
            img = e.get("image")
            if img:
                row["image"] = f"{img['format']} {img['mode']} {img['width']}x{img['height']}"
        entries.append(row)
    return {
        "format": header["format"], "created_by": header.get("created_by", {}),
        "device": header.get("device"), "archive_bytes": archive_bytes, "input_bytes": input_bytes,
        "overhead_bytes": header_bytes, "groups": groups, "entries": entries,
    }


def info(path: str) -> dict:
    with Reader(path) as r:
        return describe_header(r.header, r.size, r.overhead)


# ---- decoding --------------------------------------------------------------------------------


@dataclass
class Decoded:
    entry: dict
    data: bytes | None = None  # whole file (model entries); None for dirs/symlinks
    chunks: Iterator[bytes] | None = None  # stored entries, streamed and checked
    exact: bool = True  # the original file's bytes (False: a rewrite with the same pixels and metadata)


def _decode_groups(r: Reader, progress: Progress, mismatch_name: str) -> dict[int, np.ndarray]:
    if not r.groups:
        return {}
    from bbans import bitsback

    models = _Models()
    out = {}
    for gi, g in enumerate(r.groups):
        config = bitsback.EngineConfig.from_dict(g["engine"])
        device = config.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise MismatchError(
                    f"{mismatch_name} was coded on a GPU (device class cuda); its arithmetic is only "
                    "reproduced on one and no CUDA device is visible here"
                )
        have = available_models()
        if g["model"] not in have:
            raise MismatchError(f"{mismatch_name} needs model {g['model']!r}, which this bbans does not bundle")
        model, meta = models.get(g["model"], g["encoder"], device)
        if meta["hash"] != g["model_hash"]:
            raise MismatchError(
                f"{mismatch_name} was coded with {g['model']} ({g['encoder']}) weights "
                f"{g['model_hash'][:12]}, this bbans bundles {meta['hash'][:12]}"
            )
        c, th, tw = images.TILES[g["model"]]
        mask = None
        if g["masked"]:
            mask = np.concatenate([
                images.tile_mask(e["image"]["width"], e["image"]["height"], (th, tw))
                for e in r.entries if e["kind"] == "model" and e["group"] == gi
            ])
        stage = f"decoding {g['tiles']} tile(s) with {g['model']}"
        try:
            tiles = bitsback.decompress(model, r.blob(g["payload"]), g["tiles"], (c, th, tw), mask=mask,
                                        config=config, progress=lambda done, total, s=stage: progress(s, done, total),
                                        phantom_peak=g.get("phantom_peak"))
        except MismatchError as exc:
            raise MismatchError(f"{mismatch_name}: {g['model']} group: {exc}{_fingerprint_diff(g, config)}") from None
        except ANSError as exc:
            raise MismatchError(f"{mismatch_name}: {g['model']} group: {exc}{_fingerprint_diff(g, config)}") from None
        except BBANSError:
            raise
        except (ValueError, IndexError, RuntimeError, OverflowError) as exc:
            # The checksum held, so these bytes are what some writer meant; they still do not decode.
            raise MismatchError(f"{mismatch_name}: {g['model']} payload does not decode here "
                                f"({type(exc).__name__}: {exc}){_fingerprint_diff(g, config)}") from None
        out[gi] = np.asarray(tiles, dtype=np.uint8).reshape(g["tiles"], c, th, tw)
    return out


def _fingerprint_diff(group: dict, config) -> str:
    """What differs between the machine that coded a group and this one, for error messages."""
    from bbans import bitsback

    then = group.get("fingerprint") or {}
    try:
        now = bitsback.fingerprint(config)
    except Exception:  # a fingerprint is a courtesy; never hide the real error behind it
        return ""
    diff = [f"{k} {then.get(k)} there, {now.get(k)} here" for k in sorted(set(then) | set(now))
            if then.get(k) != now.get(k)]
    return f" (differences: {'; '.join(diff)})" if diff else ""


def decode_entries(r: Reader, progress: Progress = _noop_progress) -> Iterator[Decoded]:
    """Every entry, decoded and checked against its checksum (MismatchError names the entry)."""
    groups = _decode_groups(r, progress, r.name)
    frames = b""
    if r.header.get("frames") is not None:
        spec = r.header["frames"]
        try:
            frames = b"".join(unstore_chunks(r.blob(spec), spec, spec["size"]))
        except ArchiveError as exc:
            raise ArchiveError(f"{r.name}: frames: {exc}") from None
    zlib_version = (r.header.get("frames") or {}).get("zlib_version")
    frame_at = 0
    for e in r.entries:
        if e["kind"] == "model":
            gi = e["group"]
            start, count = e["tiles"]
            img = e["image"]
            model = r.groups[gi]["model"]
            arr = images.untile(groups[gi][start:start + count], img["width"], img["height"])
            pixels = images.from_model(arr, img["mode"], model)
            if "rebuild" in e:
                n = e["rebuild"]["frame"]
                data = _rebuilt(e, pixels, frames[frame_at:frame_at + n], zlib_version)
                frame_at += n
            else:
                want = e["pixels_sha256"] if r.version >= 2 else e["sha256"]
                if images.pixel_sha256(pixels)[:CHECKSUM_HEX] != want:
                    raise MismatchError(f"{e['path']}: decoded pixels do not match their checksum")
                try:
                    data = images.encode(pixels, img["mode"], img["format"], img.get("meta", {}))
                except Exception as exc:  # validated fields Pillow still refuses: the archive's fault
                    raise ArchiveError(f"{e['path']}: cannot write its image metadata ({type(exc).__name__})") from None
                # A rewrite (format 1, or --keep pixels): its pixels were checked, its bytes are new.
                yield Decoded(e, data=data, exact=False)
                continue
            yield Decoded(e, data=data)
        elif e["kind"] == "stored":
            yield Decoded(e, chunks=_checked_chunks(r, e))
        else:
            yield Decoded(e)


def _rebuilt(e: dict, pixels: np.ndarray, frame: bytes, zlib_version: str | None) -> bytes:
    """The original file of a model entry, from its pixels, recipe and frame; checked."""
    try:
        data = rebuild.rebuild(pixels, e["rebuild"], frame)
    except rebuild.NoPlan as exc:
        raise MismatchError(f"{e['path']}: cannot be rebuilt ({exc})") from None
    if checksum(data) != e["sha256"]:
        here = zlib.ZLIB_RUNTIME_VERSION
        why = (f"; it was deflated with zlib {zlib_version} there, {here} here"
               if e["rebuild"]["kind"] == "png" and zlib_version and zlib_version != here else "")
        raise MismatchError(f"{e['path']}: the rebuilt file does not match its checksum{why}")
    return data


def _checked_chunks(r: Reader, e: dict) -> Iterator[bytes]:
    h = hashlib.sha256()
    try:
        for chunk in unstore_chunks(r.blob(e["data"]), e["data"], e["size"]):
            h.update(chunk)
            yield chunk
    except ArchiveError as exc:
        raise ArchiveError(f"{e['path']}: {exc}") from None
    if h.hexdigest()[:CHECKSUM_HEX] != e["sha256"]:
        raise MismatchError(f"{e['path']}: stored bytes do not match their checksum")


def verify(source, progress: Progress = _noop_progress, expect: dict[str, str] | None = None) -> int:
    """Decode everything in memory and compare checksums; returns the number of entries.

    With `expect` (path -> full sha256 of the input file, from `create`'s report) every file
    restored byte for byte is also compared whole with the file it came from (rewrites made
    with keep="pixels" were compared by their pixels)."""
    with Reader(source) as r:
        n = 0
        for d in decode_entries(r, progress):
            if d.chunks is not None or d.data is not None:
                h = hashlib.sha256()
                for chunk in (d.chunks if d.chunks is not None else [d.data]):
                    h.update(chunk)
                path = d.entry["path"]
                if expect is not None and d.exact and h.hexdigest() != expect.get(path):
                    raise MismatchError(f"{path}: the archive does not give back the input file's bytes")
            n += 1
        return n


# ---- extract ---------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def conflicts(entries: list[dict], outdir: str, force: bool) -> list[str]:
    """Existing paths that block extraction (all of them without -f; folders-for-files with -f)."""
    bad = []
    for e in entries:
        target = os.path.join(outdir, *e["path"].split("/"))
        if not os.path.lexists(target):
            continue
        is_dir = os.path.isdir(target) and not os.path.islink(target)
        if e["kind"] == "dir":
            if not is_dir:
                bad.append(f"{target} exists and is not a folder")
        elif is_dir:
            bad.append(f"{target} is a folder")
        elif not force:
            bad.append(f"{target} exists")
    return bad


def extract(archive_path: str, outdir: str, force: bool = False, progress: Progress = _noop_progress,
            warn: Warn = _noop_warn) -> dict:
    """Restore the archive under `outdir`. Everything is decoded and checked in a staging folder
    first; only then is it moved into place. A failure removes whatever this run created."""
    with Reader(archive_path) as r:
        outdir = os.path.abspath(outdir)
        fresh = not os.path.lexists(outdir)
        if not fresh and not os.path.isdir(outdir):
            raise BBANSError(f"{outdir} exists and is not a folder")
        if not fresh:
            bad = conflicts(r.entries, outdir, force)
            if bad:
                more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
                hint = "" if force else "; use -f to overwrite files"
                raise BBANSError(f"refusing to overwrite: {'; '.join(bad[:3])}{more}{hint}")
        parent = os.path.dirname(outdir)
        made_parents = _makedirs_tracked(parent)
        # A fresh output folder is built beside its final place and renamed in one step; into an
        # existing folder, entries are staged inside it and moved one by one.
        stage_parent = parent if fresh else outdir
        staging = tempfile.mkdtemp(prefix=(f".{os.path.basename(outdir)}" if fresh else "") + STAGING_PREFIX,
                                   dir=stage_parent)
        placed: list[str] = []
        try:
            skipped = _write_staging(r, staging, progress, warn)
            if fresh:
                os.chmod(staging, 0o777 & ~_umask())
                try:
                    os.rename(staging, outdir)
                except OSError as exc:
                    raise BBANSError(f"cannot create {outdir}: {exc.strerror}") from None
                _fsync_dir(parent)
            else:
                _place(r.entries, staging, outdir, force, placed, skipped, warn)
                shutil.rmtree(staging, ignore_errors=True)
                _fsync_dir(outdir)
        except BaseException:
            for p in reversed(placed):
                try:
                    if os.path.isdir(p) and not os.path.islink(p):
                        os.rmdir(p)
                    else:
                        os.unlink(p)
                except OSError:
                    pass
            if os.path.isdir(staging):
                _make_writable(staging)
                shutil.rmtree(staging, ignore_errors=True)
            for p in reversed(made_parents):
                try:
                    os.rmdir(p)
                except OSError:
                    pass
            raise
        n_files = sum(1 for e in r.entries if e["kind"] in ("model", "stored"))
        return {"outdir": outdir, "files": n_files, "entries": len(r.entries), "skipped": skipped}


def _makedirs_tracked(folder: str) -> list[str]:
    """mkdir -p that returns the folders it created, outermost first, so a failure can undo it."""
    missing = []
    p = folder
    while p and not os.path.lexists(p):
        missing.append(p)
        up = os.path.dirname(p)
        if up == p:
            break
        p = up
    made = []
    for p in reversed(missing):
        try:
            os.mkdir(p)
        except OSError as exc:
            for q in reversed(made):
                try:
                    os.rmdir(q)
                except OSError:
                    pass
            raise BBANSError(f"cannot create {p}: {exc.strerror}") from None
        made.append(p)
    return made


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_writable(root: str) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass


def _symlink_ok(link_rel: str, target: str) -> bool:
    """Lexically, does a link at `link_rel` pointing at `target` stay inside the output folder?"""
    if target.startswith("/") or "\\" in target or schema.DRIVE.match(target):
        return False
    base = link_rel.split("/")[:-1]
    depth = len(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return False
    return True


def _write_staging(r: Reader, staging: str, progress: Progress, warn: Warn) -> list[dict]:
    total = len(r.entries)
    links, dirs, skipped = [], [], []
    done = 0
    for d in decode_entries(r, progress):
        e = d.entry
        target = os.path.join(staging, *e["path"].split("/"))
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError:
            raise _collision(e["path"]) from None
        if e["kind"] == "dir":
            try:
                os.mkdir(target)
            except FileExistsError:
                if not os.path.isdir(target) or os.path.islink(target):
                    raise _collision(e["path"]) from None
            dirs.append(e)
        elif e["kind"] == "symlink":
            links.append(e)
        else:
            # O_EXCL: on a case-insensitive filesystem two archive names can be one file.
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            except FileExistsError:
                raise _collision(e["path"]) from None
            with os.fdopen(fd, "wb") as f:
                if d.data is not None:
                    f.write(d.data)
                else:
                    for chunk in d.chunks:
                        f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            _apply_meta(target, e)
        done += 1
        progress("restoring", done, total)
    # Links last, so no file above was written through one.
    for e in links:
        target = os.path.join(staging, *e["path"].split("/"))
        if not _symlink_ok(e["path"], e["target"]):
            warn(f"{e['path']}: symlink to {e['target']!r} points outside the output folder; not restored")
            skipped.append({"path": e["path"], "why": "symlink target outside the output folder"})
            continue
        try:
            os.symlink(e["target"], target)
        except FileExistsError:
            raise _collision(e["path"]) from None
    # Through chains of links a lexically-inside target can still resolve outside: check the
    # real resolution now that every link exists, and drop the ones that escape.
    real_root = os.path.realpath(staging)
    for e in links:
        target = os.path.join(staging, *e["path"].split("/"))
        if os.path.islink(target) and not _inside(os.path.realpath(target), real_root):
            os.unlink(target)
            warn(f"{e['path']}: symlink to {e['target']!r} resolves outside the output folder; not restored")
            skipped.append({"path": e["path"], "why": "symlink resolves outside the output folder"})
    # Folder permissions and times last (deepest first): writing inside changes a folder's mtime,
    # and a read-only folder would block the writes.
    for e in sorted(dirs, key=lambda e: e["path"].count("/"), reverse=True):
        _apply_meta(os.path.join(staging, *e["path"].split("/")), e)
    return skipped


def _collision(path: str) -> BBANSError:
    return BBANSError(
        f"{path}: collides with another entry on this filesystem (names differing only in case or "
        "Unicode normalisation?); nothing was written"
    )


def _apply_meta(path: str, e: dict) -> None:
    if "perm" in e:
        os.chmod(path, e["perm"] & 0o777)
    if "mtime_ns" in e:
        try:
            os.utime(path, ns=(e["mtime_ns"], e["mtime_ns"]))
        except (OSError, OverflowError, ValueError):
            pass


def _place(entries: list[dict], staging: str, outdir: str, force: bool, placed: list[str], skipped: list[dict],
           warn: Warn) -> None:
    """Move staged entries into an existing output folder, never through a link out of it."""
    real_out = os.path.realpath(outdir)
    made_dirs: list[tuple[str, dict]] = []
    for e in sorted(entries, key=lambda e: (e["kind"] != "dir", e["path"].count("/"), e["path"])):
        rel = e["path"].split("/")
        src = os.path.join(staging, *rel)
        dst = os.path.join(outdir, *rel)
        if not _inside(os.path.realpath(os.path.dirname(dst)), real_out):
            raise BBANSError(f"{e['path']}: its folder in {outdir} is a link leading outside; refusing to write")
        if not os.path.lexists(src):
            continue  # a symlink refused during staging
        if e["kind"] == "dir":
            if os.path.isdir(dst) and not os.path.islink(dst):
                continue
            os.mkdir(dst, 0o700)
            placed.append(dst)
            made_dirs.append((dst, e))
            continue
        existed = os.path.lexists(dst)
        if existed and not force:
            raise BBANSError(f"refusing to overwrite: {dst} appeared while decompressing")
        if not existed:
            # link() refuses to replace, closing the window between the check and the move.
            try:
                os.link(src, dst, follow_symlinks=False)
                os.unlink(src)
                placed.append(dst)
                continue
            except FileExistsError:
                raise BBANSError(f"refusing to overwrite: {dst} appeared while decompressing") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.EACCES):
                    raise
            os.replace(src, dst)
            placed.append(dst)
        else:
            os.replace(src, dst)
    # A link that stayed inside the staging folder can still resolve outside through a link
    # that was already in the output folder: checked again on its real path, here.
    for e in entries:
        dst = os.path.join(outdir, *e["path"].split("/"))
        if e["kind"] == "symlink" and dst in placed and not _inside(os.path.realpath(dst), real_out):
            os.unlink(dst)
            placed.remove(dst)
            skipped.append({"path": e["path"], "why": "symlink resolves outside the output folder"})
            warn(f"{e['path']}: symlink to {e['target']!r} resolves outside the output folder through a link "
                 "already there; not restored")
    # Folders made here get their permissions and times once nothing more is written into them.
    for dst, e in reversed(made_dirs):
        _apply_meta(dst, e)


# ---- writing the archive ---------------------------------------------------------------------


def write_atomic(path: str, data: bytes, check: Callable[[str], None] | None = None) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync, optional check of
    the temporary file, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
