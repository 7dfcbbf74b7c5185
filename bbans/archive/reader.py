"""Reading an archive: describe it (`info`), decode its entries (`decode_entries`), and check it
against its own checksums or the inputs' (`verify`)."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from bbans.archive.format import CHECKSUM_HEX, FILE_KINDS, Progress, Reader, checksum, noop_progress, unstore_chunks
from bbans.coding.ans import Message
from bbans.errors import ANSError, ArchiveError, BBANSError, MismatchError
from bbans.io import images, jxl, rebuild
from bbans.models import catalog, registry

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
            "arithmetic": eng.get("arithmetic", "float"), "threads": eng.get("threads"),
            # Batches coded without the K steps, where they did not pay ([K, repeat] runs).
            "batch_ks": eng.get("batch_ks"),
            "batch_size": eng.get("batch_size"), "tiles": g["tiles"], "payload_bytes": plen,
            # How the latents were coded: bits a latent, and the channels left uncoded.
            "latent_bits": eng.get("prior_prec"), "uncoded_channels": len(eng.get("collapsed", [])),
            "coded_dims": dims, "bits_per_dim": (8 * plen / dims) if dims else None,
            "versions": g.get("versions", {}),
        })
    entries = []
    input_bytes = 0
    group_est: dict[int, float] = {}
    for x in header["entries"]:
        if x["kind"] == "model":
            group_est[x["group"]] = group_est.get(x["group"], 0) + x.get("est_bits", 0)
    for e in header["entries"]:
        row = {"path": e["path"], "kind": e["kind"]}
        if e["kind"] == "symlink":
            row["target"] = e["target"]
        if e["kind"] in FILE_KINDS:
            input_bytes += e["size"]
            row["size"] = e["size"]
            dims = _dims(e.get("image"))
            if e["kind"] == "model":
                g = header["groups"][e["group"]]
                gd = g.get("coded_dims") or 0
                # The group payload is one message; an entry's share is its ELBO-based estimate
                # scaled so the shares add up to the payload.
                total_est = group_est[e["group"]]
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


def info(path, name: str | None = None) -> dict:
    with Reader(path, name) as r:
        return describe_header(r.header, r.size, r.overhead)


# ---- decoding --------------------------------------------------------------------------------


@dataclass
class Decoded:
    entry: dict
    data: bytes | None = None  # whole file (model entries); None for dirs/symlinks
    chunks: Iterator[bytes] | None = None  # stored entries, streamed and checked
    exact: bool = True  # the original file's bytes (False: a rewrite with the same pixels and metadata)


def _decode_groups(r: Reader, progress: Progress, mismatch_name: str, device: str = "auto",
                   threads: int = 0) -> dict[int, np.ndarray]:
    if not r.groups:
        return {}
    # Each group's bar from the first second, before torch and the models load.
    for g in r.groups:
        progress(f"decoding {g['tiles']} tile(s) with {g['model']}", 0, g["tiles"])
    # torch and the models load only here, for an archive whose checks all passed and that has
    # model groups: listing an archive, or refusing a damaged one, takes a fraction of a second.
    import torch

    from bbans.coding import engine
    from bbans.models import checkpoints

    models = checkpoints.Loaded()
    have = catalog.by_name()
    out = {}
    for gi, g in enumerate(r.groups):
        config = engine.EngineConfig.from_dict(g["engine"])
        if engine.portable(config):
            # The same bits anywhere and with any thread count: decode where asked, or where it
            # is fastest. A float group keeps the threads it was coded with (they change sums).
            config = replace(config, device=engine.resolve_device(device), threads=engine.resolve_threads(threads))
        elif device not in ("auto", config.device):
            raise MismatchError(f"{mismatch_name}: the {g['model']} group was coded on device class {config.device} "
                                f"in float arithmetic; it is reproduced only there, not on {device}")
        elif config.device == "cuda" and not torch.cuda.is_available():
            raise MismatchError(
                f"{mismatch_name} was coded on a GPU (device class cuda) in float arithmetic; it is only "
                "reproduced on one and no CUDA device is visible here"
            )
        device_here = config.device
        if g["model"] not in have:
            raise MismatchError(f"{mismatch_name} needs model {g['model']!r}, which this bbans does not bundle")
        model, meta = models.get(g["model"], g["encoder"], device_here)
        if not meta["hash"].startswith(g["model_hash"]):
            raise MismatchError(
                f"{mismatch_name} was coded with {g['model']} ({g['encoder']}) weights "
                f"{g['model_hash'][:12]}, this bbans bundles {meta['hash'][:12]}"
            )
        c, th, tw = registry.spec(g["model"]).tile
        mask = None
        if g["masked"]:
            mask = np.concatenate([
                images.tile_mask(e["image"]["width"], e["image"]["height"], (th, tw))
                for e in r.entries if e["kind"] == "model" and e["group"] == gi
            ])
        stage = f"decoding {g['tiles']} tile(s) with {g['model']}"
        try:
            payload = r.blob(g["payload"])
            if r.version >= 5:
                payload = Message.framed(payload, config.lanes)
            tiles = engine.decompress(model, payload, g["tiles"], (c, th, tw), mask=mask,
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
    from bbans.coding import engine

    then = group.get("fingerprint") or {}
    now = engine.fingerprint(config)
    diff = [f"{k} {then.get(k)} there, {now.get(k)} here" for k in sorted(set(then) | set(now))
            if then.get(k) != now.get(k)]
    return f" (differences: {'; '.join(diff)})" if diff else ""


def decode_entries(r: Reader, progress: Progress = noop_progress, device: str = "auto",
                   threads: int = 0) -> Iterator[Decoded]:
    """Every entry, decoded and checked against its checksum (MismatchError names the entry).

    device: where model groups are decoded (auto: a GPU where there is one, for groups in the
    exact arithmetic; the device class they were coded on, for float ones)."""
    groups = _decode_groups(r, progress, r.name, device, threads)
    frames = b""
    if r.header.get("frames") is not None:
        spec = r.header["frames"]
        try:
            frames = b"".join(unstore_chunks(r.blob(spec), spec, spec["size"]))
        except ArchiveError as exc:
            raise ArchiveError(f"{r.name}: frames: {exc}") from None
    zlib_version = r.header.get("zlib_version") or (r.header.get("frames") or {}).get("zlib_version")
    frame_at = 0
    # Format 3: tile ranges follow from entry order, and a group's rebuilt files are checked
    # together against its checksum, before the last of them is handed out.
    cursor = [0] * len(r.groups)
    digest = [hashlib.sha256() for _ in r.groups]
    left = [sum(1 for e in r.entries if e["kind"] == "model" and e["group"] == gi and "rebuild" in e)
            for gi in range(len(r.groups))]
    for e in r.entries:
        if e["kind"] == "model":
            gi = e["group"]
            img = e["image"]
            model = r.groups[gi]["model"]
            if r.version >= 3:
                start, count = cursor[gi], images.tile_count(img["width"], img["height"], registry.spec(model).tile[1:])
                cursor[gi] += count
            else:
                start, count = e["tiles"]
            arr = images.untile(groups[gi][start:start + count], img["width"], img["height"])
            pixels = images.from_model(arr, img["mode"], model)
            if "rebuild" in e:
                n = e["rebuild"]["frame"]
                data = _rebuilt(e, pixels, frames[frame_at:frame_at + n], zlib_version)
                frame_at += n
                if r.version >= 3:
                    digest[gi].update(data)
                    left[gi] -= 1
                    want = r.groups[gi]["sha256"]
                    if not left[gi] and digest[gi].hexdigest()[:len(want)] != want:
                        here = zlib.ZLIB_RUNTIME_VERSION
                        why = (f"; they were deflated with zlib {zlib_version} there, {here} here"
                               if zlib_version and zlib_version != here else "")
                        raise MismatchError(f"{r.name}: the files rebuilt from the {model} group do not match "
                                            f"their checksum{why}")
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
        elif e["kind"] == "image":
            img = e["image"]
            pixels = jxl.decode_pixels(r.blob(e["data"]), img["width"], img["height"], img["mode"])
            n = e["rebuild"]["frame"]
            data = _rebuilt(e, pixels, frames[frame_at:frame_at + n], zlib_version)
            frame_at += n
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
    if "sha256" in e and checksum(data) != e["sha256"]:
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


def verify(source, progress: Progress = noop_progress, expect: dict[str, str] | None = None) -> int:
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


def read_one(source, progress: Progress = noop_progress, name: str | None = None,
             device: str = "auto", threads: int = 0) -> tuple[str, bytes]:
    """The path and bytes of an archive's only file, decoded and checked whole before they are
    returned (what `decompress -c` writes to standard output)."""
    with Reader(source, name) as r:
        files = [e for e in r.entries if e["kind"] in FILE_KINDS]
        if len(files) != 1:
            raise BBANSError(f"{r.name} holds {len(files)} files; writing to standard output needs an archive "
                             "of exactly one (extract it with -o DIR)")
        found = None
        for d in decode_entries(r, progress, device, threads):
            if d.entry is files[0]:
                found = d.entry["path"], d.data if d.data is not None else b"".join(d.chunks)
        return found
