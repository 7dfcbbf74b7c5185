"""Making an archive: walk the inputs, route each file (bbans.io.images.probe), code the tiles of
each model group in one engine call, store everything else with LZMA2, and write the result
atomically."""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bbans import __version__
from bbans.archive.format import (CHECKSUM_HEX, FORMAT_VERSION, Blobs, Progress, Warn, checksum, noop_progress,
                                  noop_warn, pack, store)
from bbans.archive.reader import describe_header
from bbans.archive.schema import check_name, work_problem
from bbans.coding.ans import Message
from bbans.errors import ArchiveError, BBANSError
from bbans.io import images, jxl
from bbans.models import catalog, registry

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


# ---- create ----------------------------------------------------------------------------------


@dataclass
class Options:
    model: str = "auto"  # "auto", "none" or a model name
    encoder: str = "auto"  # "auto": per model the bundled encoder better on held-out images
    K: int = 0
    device: str = "auto"
    batch_size: int = 256
    lanes: int | None = None  # None: auto_lanes
    seed: int = 0
    keep: str = "bytes"  # "bytes": files come back byte for byte; "pixels": pixels and metadata
    level: int = 7  # JPEG-XL effort (1 fastest .. 9 smallest) for images no model codes better
    arithmetic: str = "exact-1"  # bbans.coding.arithmetic: "float" decodes only where it was made
    threads: int = 0  # CPU threads (0: every core); recorded, and binding, only for float groups


# What a model-coded entry's header costs beyond a JPEG-XL or stored one's: less, as it has no
# checksum, data reference or reason (format 5, measured on 1 to 8 binarized digits coded either
# way: 13 B less a file); and what a model group's record adds (12 B: its header is 54 B with one
# digit model-coded, 56 B with it under JPEG-XL). benchmarks/RESULTS.md "Format 5".
ENTRY_MODEL_BYTES = -12
GROUP_RECORD_BYTES = 12
# cheaper_with: a large image's estimate starts from this many of its tiles, and stops there when
# it puts the model this far above the cheapest other way (a sample's estimate is within a few
# percent of the whole image's on photographs).
SAMPLE_TILES = 32
SAMPLE_MARGIN = 1.15
# cheaper_with: of a group of many images, this many are estimated first; where the model takes
# at most CLEAR_WIN of the cheapest other way on every one of them, the rest are not estimated
# but checked after coding, by their own coded -ELBO (a folder of scans of one kind).
SAMPLE_IMAGES = 32
CLEAR_WIN = 0.8
# --model auto codes an image with a model only where that costs less than storing it. Tests of
# routing with untrained stand-in models (which always lose) switch the comparison off.
CHOOSE_BY_COST = True
# Groups of at most this many tiles are also coded with the other models that serve them, and
# the smallest payload kept: on binarized digits the paper's MLP beats the hierarchy up to
# about 200 images (benchmarks/RESULTS.md "Small sets").
SMALL_GROUP_TILES = 256


def _coder():
    """(bbans.coding.engine, bbans.models.checkpoints), imported where the first model is needed:
    they bring torch (about 1.5 s), whose import then overlaps the JPEG-XL encodes that reading
    started in their threads, instead of delaying everything before it."""
    from bbans.coding import engine
    from bbans.models import checkpoints

    return engine, checkpoints


def _recorded(config) -> dict:
    """A group's engine settings as the archive keeps them. An exact group decodes to the same
    bits with any thread count, so its count is not kept: the same inputs make the same archive
    on any machine, and the decoder uses its own."""
    d = config.to_dict()
    if _coder()[0].portable(config):
        del d["threads"]
    return d


def auto_lanes(coded_dims: int, bits_per_dim: float) -> int:
    """Each lane ends as an 8-byte head in the payload (and borrows its own first words), but the
    engine walks the values in steps of `lanes`, each step a few NumPy calls. So: the most lanes,
    up to 128 and a power of two, whose heads take at most 1/25 of the payload the model's test
    figure predicts (benchmarks/RESULTS.md "Small sets": one lane for ten digits, 64 for 1,000)."""
    lanes = 1
    while lanes < 128 and 2 * lanes * 64 * 25 <= coded_dims * bits_per_dim:
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


def create(roots: list[str], opts: Options, progress: Progress = noop_progress, warn: Warn = noop_warn,
           exclude: set[str] | None = None) -> tuple[bytes, dict]:
    """Build an archive of `roots`. Returns (archive bytes, report)."""
    b = _Build(opts, progress)
    sc = scan(roots, exclude)
    for src, why in sc.skipped:
        warn(f"{src}: {why}")
    files = [i for i in sc.items if i.kind == "file"]
    try:
        b.read(files)
        chosen = b.route()
        b.code_groups(chosen)
        b.pick_jpeg_xl(files)
    finally:
        b.pool.shutdown(cancel_futures=True)
    b.to_store = sum(1 for i in files if i.path not in b.tile_plan and i.path not in b.pictured)
    entries = [b.entry(item) for item in sc.items]
    progress("storing", b.to_store, b.to_store)
    # Payload order must be header order (groups, frames, then entries): the reader insists on it.
    version = FORMAT_VERSION
    header = {
        "format": version,
        "created_by": {"bbans": __version__},
        "device": b.device if b.groups else None,
        "groups": b.groups,
        "entries": entries,
    }
    if b.frames_entry is not None:
        header["frames"] = b.frames_entry
    if b.rebuilt_any:
        # The zlib that deflated the files' pixel data: named when a rebuild differs elsewhere.
        header["zlib_version"] = zlib.ZLIB_RUNTIME_VERSION
    archive = pack(header, b.blobs.parts, version)
    report = describe_header(header, len(archive), len(archive) - b.blobs.end)
    report["skipped"] = [{"source": s, "why": w} for s, w in sc.skipped]
    report["notes"] = b.notes
    report["sha256"] = b.full_hashes
    return archive, report


class _Build:
    """One archive in the making: the inputs read, the coder each file gets, the blobs."""

    def __init__(self, opts: Options, progress: Progress):
        self.opts, self.progress = opts, progress
        self.have = catalog.by_name() if opts.model != "none" else {}
        if opts.model not in ("auto", "none"):
            if opts.model not in registry.NAMES:
                raise BBANSError(f"unknown model {opts.model!r}; choose auto, none, {', '.join(registry.NAMES)}")
            if opts.model not in self.have:
                raise BBANSError(f"model {opts.model!r} is not bundled with this bbans (see `bbans models`)")
        self.cost_check = opts.model == "auto" and CHOOSE_BY_COST
        self.notes: list[str] = []
        self.datas: dict[str, bytes] = {}
        self.probes: dict[str, images.Probe] = {}
        self.full_hashes: dict[str, str] = {}
        self.stored_blobs: dict[str, tuple[bytes, dict]] = {}
        self.loaded = None  # checkpoints.Loaded, once a model is needed
        # JPEG-XL encodes of the images, started as each is read (see pixel_blob).
        self.pool = ThreadPoolExecutor(max_workers=opts.threads if opts.threads > 0 else (os.cpu_count() or 1))
        self.pixel_jobs: dict[str, Future] = {}
        self.device = opts.device
        self.groups: list[dict] = []
        self.blobs = Blobs()
        self.tile_plan: dict[str, tuple[int, int, int]] = {}  # path -> (group, start, count)
        self.pictured: dict[str, bytes] = {}
        self.frames_entry: dict | None = None
        self.rebuilt_any = False  # any entry rebuilt from its pixels (whose zlib the header names)
        self.stored_n = self.to_store = 0

    # ---- the inputs and what storing them costs -----------------------------------------------
    def read(self, files) -> None:
        for n, item in enumerate(files):
            self.progress("reading", n, len(files))
            self.datas[item.path] = _read_regular(item.source)
            self.full_hashes[item.path] = hashlib.sha256(self.datas[item.path]).hexdigest()
            pr = self.probes[item.path] = images.probe(self.datas[item.path], self.opts.keep)
            if self.opts.model == "auto" and pr.recipe is not None and pr.pixels is not None:
                # libjxl runs outside the GIL: started now, the encode overlaps the reading
                # and torch's import, and every image's is wanted (pixel_blob).
                self.pixel_jobs[item.path] = self.pool.submit(jxl.encode_pixels, pr.pixels, self.opts.level)
        self.progress("reading", len(files), len(files))

    def models(self):
        """The models loaded so far (checkpoints.Loaded): each loaded once per archive."""
        if self.loaded is None:
            self.loaded = _coder()[1].Loaded()
        return self.loaded

    def stored_blob(self, path: str) -> tuple[bytes, dict]:
        """The file as a stored entry would hold it (LZMA2, raw, or a JPEG recompressed by
        JPEG-XL where that reconstructs it exactly and is smaller); what a model must beat."""
        if path not in self.stored_blobs:
            blob, spec = store(self.datas[path])
            if self.probes[path].format == "JPEG":
                enc = jxl.recompress(self.datas[path])
                if enc is not None and len(enc) < len(blob):
                    blob, spec = enc, {"codec": jxl.JPEG_CODEC}
                    self.probes[path].reason = "JPEG, recompressed losslessly by JPEG-XL (restored byte for byte)"
            self.stored_blobs[path] = blob, spec
        return self.stored_blobs[path]

    def pixel_blob(self, path: str) -> bytes | None:
        """The image's pixels under JPEG-XL lossless, where a recipe rebuilds its file from them
        (under --model auto only: the other settings name the one coder they want)."""
        job = self.pixel_jobs.get(path)
        return None if job is None else job.result()

    def without_model(self, path: str) -> tuple[int, str]:
        """Bytes of the cheapest way to keep the file without a model, and its name."""
        stored = len(self.stored_blob(path)[0])
        enc = self.pixel_blob(path)
        if enc is not None and len(enc) + len(self.probes[path].frame) < stored:
            return len(enc) + len(self.probes[path].frame), "JPEG-XL"
        return stored, "LZMA2" if self.stored_blob(path)[1]["codec"] != jxl.JPEG_CODEC else "JPEG-XL"

    # ---- models ----------------------------------------------------------------------------------
    def route(self) -> dict[str, str]:
        """path -> the model that will code it; loads each, falling back where one fails."""
        opts, probes = self.opts, self.probes
        allowed = set(self.have) if opts.model == "auto" else ({opts.model} & set(self.have))
        unusable: dict[str, str] = {name: "is not bundled" for name in registry.NAMES if name not in self.have}
        while True:
            chosen = _route(probes, allowed - set(unusable))
            needed = sorted(set(chosen.values()))
            if needed:
                self.device = _coder()[0].resolve_device(opts.device)
            failed = False
            for name in needed:
                try:
                    self.models().get(name, opts.encoder, self.device)
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
                went = f"coded with {chosen[path]}" if path in chosen else "kept without a model"
                p.reason = f"model {want} {unusable[want]}"
                missing[(want, went)] = missing.get((want, went), 0) + 1
        for (name, went), count in sorted(missing.items()):
            self.notes.append(f"model {name} {unusable[name]}: {count} image(s) {went} instead")
        return chosen

    def _estimate(self, model, tiles: np.ndarray) -> np.ndarray:
        # An estimate only this end makes: torch's fast float kernels do.
        engine = _coder()[0]
        return engine.estimate_bits(model, tiles, engine.EngineConfig(
            seed=self.opts.seed, device=self.device, arithmetic="float", dtype="float32",
            threads=engine.resolve_threads(self.opts.threads), **engine.model_settings(model)))

    def model_bytes(self, path: str, bits: float) -> float:
        """What a file takes model-coded, from its -ELBO in bits: the bits, its entry, and its frame
        (the bytes around its pixels, kept as under JPEG-XL)."""
        return max(0.0, bits) / 8 + ENTRY_MODEL_BYTES + len(self.probes[path].frame)

    def cheaper_with(self, name: str, model, members: list[str], tiled: dict) -> tuple[list[str], bool]:
        """The members the model codes in fewer bytes than they take without it, by its -ELBO
        (amortized, K = 0) before any coding; and whether that was settled for each of them.

        A large image is first estimated on a sample of SAMPLE_TILES evenly spaced tiles: where
        that puts the model SAMPLE_MARGIN above the cheapest other way, the image goes without
        the model and its other tiles are never run (a photograph's hundreds of tiles). Many
        images are first estimated on a sample of SAMPLE_IMAGES: where the model wins clearly on
        each, all are kept unsettled, for code_group to check by what coding them cost."""
        self.progress(f"estimating {name}", 0, 1)
        for path in [p for p in members if len(tiled[p][0]) > 2 * SAMPLE_TILES]:
            n_tiles = len(tiled[path][0])
            pick = np.linspace(0, n_tiles - 1, SAMPLE_TILES).round().astype(int)
            sampled = float(self._estimate(model, tiled[path][0][pick]).sum()) * n_tiles / SAMPLE_TILES / 8
            other, how = self.without_model(path)
            if sampled > SAMPLE_MARGIN * other:
                members = [p for p in members if p != path]
                self.probes[path].reason = (f"model {name} would take ~{sampled:.0f} B (from {SAMPLE_TILES} of "
                                            f"{n_tiles} tiles), {how} {other} B")
        if not members:
            self.progress(f"estimating {name}", 1, 1)
            return [], True
        if len(members) > 2 * SAMPLE_IMAGES:
            pick = [members[i] for i in np.linspace(0, len(members) - 1, SAMPLE_IMAGES).round().astype(int)]
            if all(cost < CLEAR_WIN * self.without_model(p)[0] for p, cost in self._costs(model, pick, tiled)):
                self.progress(f"estimating {name}", 1, 1)
                return members, False
        kept = []
        for path, cost in self._costs(model, members, tiled):
            other, how = self.without_model(path)
            if cost < other:
                kept.append(path)
            else:
                self.probes[path].reason = f"model {name} would take ~{cost:.0f} B, {how} {other} B"
        self.progress(f"estimating {name}", 1, 1)
        return kept, True

    def _costs(self, model, members: list[str], tiled: dict) -> list[tuple[str, float]]:
        """(path, model_bytes by the estimate) for each member."""
        est = self._estimate(model, np.concatenate([tiled[p][0] for p in members]))
        return self._per_file(members, [len(tiled[p][0]) for p in members], est)

    def _per_file(self, members: list[str], counts: list[int], per_tile) -> list[tuple[str, float]]:
        """(path, model_bytes) of each member from its tiles' bits, the tiles in member order."""
        ends = np.cumsum(counts)
        return [(path, self.model_bytes(path, float(np.sum(per_tile[end - n:end]))))
                for path, n, end in zip(members, counts, ends)]

    def dearer_coded(self, name: str, members: list[str], trial: dict) -> list[str]:
        """The members that coding cost more than they take without the model, by each one's
        coded -ELBO (naming why in each)."""
        per_tile = np.asarray(trial["stats"]["image_neg_elbo_bits"], dtype=float)
        dear = []
        for path, cost in self._per_file(members, trial["counts"], per_tile):
            other, how = self.without_model(path)
            if cost >= other:
                dear.append(path)
                self.probes[path].reason = f"model {name} coded it in ~{cost:.0f} B, {how} {other} B"
        return dear

    def code_groups(self, chosen: dict[str, str]) -> None:
        """One engine call per model, in the order of first use over the sorted entries."""
        order: list[str] = []
        for path in sorted(chosen):
            if chosen[path] not in order:
                order.append(chosen[path])
        for name in order:
            self.code_group(name, [p for p in sorted(chosen) if chosen[p] == name])

    def tiled(self, name: str, members: list[str]) -> dict:
        """path -> (tiles, mask) of each member's pixels as the model's tiles."""
        _, th, tw = registry.spec(name).tile
        return {p: images.tile(images.to_model(self.probes[p].pixels, self.probes[p].mode, name), (th, tw))
                for p in members}

    def trial(self, name: str, members: list[str], tiled: dict) -> dict:
        """The members coded with one model: its payload and everything the group record needs."""
        opts = self.opts
        c = registry.spec(name).tile[0]
        engine = _coder()[0]
        model, meta = self.models().get(name, opts.encoder, self.device)
        tiles = np.concatenate([tiled[p][0] for p in members])
        mask = np.concatenate([tiled[p][1] for p in members])
        masked = not bool(mask.all())
        K, note = opts.K, None
        gain = meta.get("kstep_gain")
        if K and isinstance(gain, (int, float)) and gain < engine.STEP_MIN_GAIN:
            # Measured on held-out images when the model was bundled: its steps save less than
            # the trial could tell from noise on a folder, and cost K times the coding.
            K = 0
            note = (f"--K {opts.K} not used with {name}: its steps save {100 * gain:.2f}% on held-out "
                    f"images (under {100 * engine.STEP_MIN_GAIN:.1f}%), coded at K=0")
        rate = meta.get("test_bits_per_dim")
        lanes = opts.lanes or auto_lanes(int(mask.sum()) * c, rate if isinstance(rate, (int, float)) else 1.0)
        config = engine.EngineConfig(K=K, seed=opts.seed, lanes=lanes,
                                     batch_size=opts.batch_size, device=self.device, arithmetic=opts.arithmetic,
                                     threads=engine.resolve_threads(opts.threads), **engine.model_settings(model),
                                     dtype="float32" if opts.arithmetic == "float" else "float64")
        stage = f"coding {len(members)} image(s) with {name}"
        payload, stats = engine.compress(model, tiles, mask if masked else None, config,
                                         progress=lambda done, total: self.progress(stage, done, total))
        payload = Message.bare(payload)  # the group records its lanes
        return {"name": name, "meta": meta, "config": config, "payload": payload, "stats": stats, "K": K,
                "note": note, "tiles": tiles, "masked": masked, "coded_dims": int(mask.sum()) * c,
                "counts": [len(tiled[p][0]) for p in members]}

    def rivals(self, name: str, members: list[str]) -> list[str]:
        """The other bundled models of the same pixel alphabet that code every member, under
        --model auto (a small group's trial runs them too; a model of a wider alphabet, grey for
        black-and-white, never codes them in less)."""
        if not self.cost_check:
            return []
        alphabet = registry.spec(name).alphabet
        return [m for m in registry.NAMES if m != name and m in self.have and registry.spec(m).alphabet == alphabet
                and all(m in self.probes[p].routes for p in members)]

    def code_group(self, name: str, members: list[str]) -> None:
        opts, probes = self.opts, self.probes
        engine = _coder()[0]
        model, _ = self.models().get(name, opts.encoder, self.device)
        tiled = self.tiled(name, members)
        # Under --model auto, a model codes only what it codes in fewer bytes than the file takes
        # without it; the estimate decides before coding, a trial of the group settles it after.
        # A model named on the command line codes everything it serves.
        settled = True
        if self.cost_check:
            members, settled = self.cheaper_with(name, model, members, tiled)
        if not members:
            return
        best = self.trial(name, members, tiled)
        if not settled:
            # Kept on a sample's estimate: each member's own coded -ELBO settles it now, and the
            # group is coded again without any that came out dearer (rare: an odd file among many).
            dear = self.dearer_coded(name, members, best)
            if dear:
                members = [p for p in members if p not in dear]
                if not members:
                    return
                best = self.trial(name, members, tiled)
        if len(best["tiles"]) <= SMALL_GROUP_TILES:
            # A few images cannot repay a model's fixed costs (the bits its first image borrows
            # grow with its latents): a model with fewer latents may code them in less.
            for other in self.rivals(name, members):
                try:
                    t = self.trial(other, members, self.tiled(other, members))
                except BBANSError:
                    continue  # a rival that will not load is no rival
                if len(t["payload"]) < len(best["payload"]):
                    best = t
        name, meta, config, payload, stats, K = (best[k] for k in ("name", "meta", "config", "payload", "stats", "K"))
        tiles, masked, coded_dims, counts = best["tiles"], best["masked"], best["coded_dims"], best["counts"]
        if best["note"]:
            self.notes.append(best["note"])
        problem = work_problem(coded_dims, K, len(payload))
        if problem:
            # The reader refuses such a group (it could be a decompression bomb), so the writer
            # never makes one: these images are nearly blank and LZMA2 stores them well.
            for path in members:
                probes[path].reason = f"model {name} codes it below the archive's floor ({problem})"
                probes[path].routes = ()
            return
        without = sum(self.without_model(p)[0] for p in members)
        frames = sum(len(probes[p].frame) for p in members)
        if self.cost_check and len(payload) + frames + ENTRY_MODEL_BYTES * len(members) + GROUP_RECORD_BYTES >= without:
            # The group's fixed costs (lanes, initial bits, its record) outweigh what the model saves.
            for path in members:
                probes[path].reason = (f"model {name} coded {len(members)} image(s) in {len(payload)} B, "
                                       f"without it they take {without} B")
            return
        gi = len(self.groups)
        start = 0
        for path, count in zip(members, counts):
            self.tile_plan[path] = (gi, start, count)
            start += count
        # One checksum over every rebuilt file of the group, in entry order, instead of one each.
        digest = hashlib.sha256()
        for path in members:
            if probes[path].recipe is not None:
                digest.update(self.datas[path])
        self.groups.append({
            "model": name,
            "model_hash": meta["hash"][:CHECKSUM_HEX],
            "encoder": meta["encoder"],
            "engine": _recorded(stats["config"]),
            "tiles": int(len(tiles)),
            "masked": masked,
            "coded_dims": coded_dims,
            "payload": self.blobs.add(payload),
            # Where a group's sums depend on the machine, what did them (named when it will not
            # decode elsewhere); an exact group decodes alike everywhere.
            **({} if engine.portable(config) else {
                "versions": {"bbans": __version__, "numpy": np.__version__, "torch": engine.torch.__version__},
                "fingerprint": engine.fingerprint(config)}),
            "neg_elbo_bits": round(float(stats["neg_elbo_bits"]), 1),
            "phantom_peak": int(stats["phantom_peak"]),
            **({"sha256": digest.hexdigest()[:CHECKSUM_HEX]} if any(probes[p].recipe is not None for p in members) else {}),
        })

    # ---- what is left, and the entries ---------------------------------------------------------
    def pick_jpeg_xl(self, files) -> None:
        """Images no model codes whose pixels JPEG-XL keeps in fewer bytes than storing the file;
        then the frames blob: the non-pixel bytes of every rebuilt file, one LZMA2 blob, in entry
        order (each recipe records only its frame's length)."""
        for item in files:
            enc = None if item.path in self.tile_plan else self.pixel_blob(item.path)
            if enc is not None and len(enc) + len(self.probes[item.path].frame) < len(self.stored_blob(item.path)[0]):
                self.pictured[item.path] = enc
        frames = [self.probes[i.path].frame for i in files
                  if (i.path in self.tile_plan and self.probes[i.path].recipe is not None) or i.path in self.pictured]
        if any(frames):  # bare PNG frames leave nothing to store
            blob, spec = store(b"".join(frames))
            self.frames_entry = {**self.blobs.add(blob), **spec, "size": sum(map(len, frames))}
        self.rebuilt_any = bool(frames)

    def entry(self, item) -> dict:
        e: dict = {"path": item.path, "kind": item.kind if item.kind != "file" else ""}
        if item.kind == "symlink":
            e["target"] = item.target
            return e
        e["perm"] = stat.S_IMODE(item.st.st_mode) & 0o777
        e["mtime_ns"] = item.st.st_mtime_ns
        if item.kind == "dir":
            return e
        data, pr = self.datas[item.path], self.probes[item.path]
        e["size"] = len(data)
        image = {"format": pr.format, "mode": pr.mode, "width": pr.size[0], "height": pr.size[1]} if pr.size else None
        if item.path in self.tile_plan:
            # Its tiles follow from entry order; a rebuilt file is checked by its group's checksum.
            gi = self.tile_plan[item.path][0]
            e.update(kind="model", group=gi, image=image)
            if pr.recipe is not None:
                e["rebuild"] = {**pr.recipe, "frame": len(pr.frame)}
            else:
                e["sha256"] = checksum(data)
                e["pixels_sha256"] = images.pixel_sha256(pr.pixels)[:CHECKSUM_HEX]
                e["image"]["meta"] = pr.meta
        elif item.path in self.pictured:
            e.update(kind="image", image=image, sha256=checksum(data), rebuild={**pr.recipe, "frame": len(pr.frame)},
                     data={**self.blobs.add(self.pictured[item.path]), "codec": jxl.PIXEL_CODEC},
                     why=pr.reason or "no model codes it")
        else:
            self.progress("storing", self.stored_n, self.to_store)
            self.stored_n += 1
            blob, spec = self.stored_blob(item.path)
            e.update(kind="stored", sha256=checksum(data), data={**self.blobs.add(blob), **spec},
                     why=pr.reason or "not an image")
            if pr.is_image and pr.mode and pr.size:
                e["image"] = image
        # What is written into the archive is let go of as it goes.
        del self.datas[item.path], self.probes[item.path]
        self.stored_blobs.pop(item.path, None)
        return e
