"""`bbans compress`, `decompress`, `info` and `models`: the archive commands."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

import click

from bbans.archive import schema
from bbans.cli import signals
from bbans.cli.help import epilog
from bbans.errors import BBANSError
from bbans.io import images
from bbans.models import registry

class _Progress:
    """rich progress bars on stderr, one per stage; a no-op when quiet or not on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task):
                    speed = task.finished_speed or task.speed
                    return Text("" if speed is None else f"{speed:,.1f}/s" if speed < 100 else f"{speed:,.0f}/s")

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int) -> None:
        signals.check()
        if self.bar is None or total <= 0:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


def _progress(quiet: bool, as_json: bool) -> _Progress:
    return _Progress(not quiet and not as_json and sys.stderr.isatty())


def _warn(msg: str) -> None:
    click.echo(f"bbans: warning: {msg}", err=True)


def _console(err: bool = False):
    from rich.console import Console

    out = sys.stderr if err else sys.stdout
    return Console(file=out, width=None if out.isatty() else 160, highlight=False, soft_wrap=True)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _bpd(v) -> str:
    return "" if v is None else f"{v:.3f}"


def _print_entries(con, rep: dict) -> None:
    # Plain aligned columns, not a rich table: a table of thousands of entries takes seconds to
    # lay out. Names are printed whole (a cut name is no use); the note runs to the line's end.
    rows = [("path", "kind", "image", "size", "coded", "bits/dim", "note")]
    for e in rep["entries"]:
        if e["kind"] == "dir":
            rows.append((e["path"] + "/", "dir", "", "", "", "", ""))
        elif e["kind"] == "symlink":
            rows.append((e["path"], "symlink", "", "", "", "", f"-> {e['target']}"))
        else:
            rows.append((e["path"], f"{e['kind']} {e['how']}", e.get("image", ""), _fmt_bytes(e["size"]),
                         _fmt_bytes(e["coded_bytes"]), _bpd(e.get("bits_per_dim")), e.get("why", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    right = (False, False, False, True, True, True)
    lines = ("  ".join([c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, right)] + [r[6]]).rstrip()
             for r in rows)
    con.file.write("\n".join(lines) + "\n")


def _steps(g: dict) -> str:
    """Where a group's batches did without the K steps (they did not pay there)."""
    runs = g.get("batch_ks")
    if not runs:
        return ""
    total = sum(n for _, n in runs)
    took = sum(n for k, n in runs if k == g["K"])
    return f" in {took} of {total} batches (the rest cheaper at K=0)"


def _print_summary(con, rep: dict, title: str) -> None:
    files = [e for e in rep["entries"] if "size" in e]
    coded = [e for e in files if e["kind"] == "model"]
    pictures = [e for e in files if e["kind"] == "image"]
    stored = [e for e in files if e["kind"] == "stored"]
    ratio = rep["input_bytes"] / rep["archive_bytes"] if rep["archive_bytes"] else 0
    con.print(f"{title}: {len(files)} file(s), {_fmt_bytes(rep['input_bytes'])} -> "
              f"{_fmt_bytes(rep['archive_bytes'])} ({ratio:.2f}x); "
              f"{len(coded)} model-coded, " + (f"{len(pictures)} JPEG-XL, " if pictures else "")
              + f"{len(stored)} stored, overhead {_fmt_bytes(rep['overhead_bytes'])}")
    for g in rep["groups"]:
        con.print(f"  model {g['model']} ({g['encoder']} encoder, hash {g['model_hash'][:12]}): K={g['K']}{_steps(g)}, "
                  + (f"exact-1 arithmetic (opens on any machine), coded on {g['device']}, "
                     if g.get("arithmetic") == "exact-1" else
                     f"{g.get('arithmetic', 'float')} arithmetic (opens only where it runs), device {g['device']}, ")
                  + f"{g['tiles']} tile(s), {_fmt_bytes(g['payload_bytes'])}, "
                  f"{_bpd(g['bits_per_dim'])} bits/dim over {g['coded_dims']} coded values")
    reasons: dict[str, int] = {}
    for e in stored + pictures:
        key = (e["kind"], e.get("why", ""))
        reasons[key] = reasons.get(key, 0) + 1
    for (kind, why), n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        con.print(f"  {'JPEG-XL' if kind == 'image' else 'stored'} {n}: {why}")


def _dump_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ---- standard streams ------------------------------------------------------------------------

STREAM = "-"


def _read_stdin(what: str) -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        raise BBANSError(f"{what} from standard input, but it is a terminal; pipe or redirect something into it")
    return sys.stdin.buffer.read()


def _stdout_binary(force: bool, what: str):
    if sys.stdout.isatty() and not force:
        raise BBANSError(f"refusing to write {what} to a terminal; redirect standard output, or use -f")
    return sys.stdout.buffer


def _source(archive_path: str):
    """(what Reader opens, its name in messages): a path, or the bytes of standard input."""
    if archive_path == STREAM:
        return _read_stdin("reading the archive"), "stdin"
    return archive_path, None


# ---- compress --------------------------------------------------------------------------------


@click.command("compress", epilog=epilog("""\b
Examples:
  bbans compress digits/                   # writes digits.bb
  bbans compress a.png b.bmp notes.txt -o mixed.bb --verify
  bbans compress photos/ -o photos.bb --K 7 --device cuda
  bbans compress scans/ -o scans.bb --model none   # LZMA only
  bbans compress digits/ -c | ssh host 'cat > digits.bb'
  cat scan.png | bbans compress - --name scan.png -o scan.bb

\b
A folder's contents are stored relative to it; a file under its own
name; standard input (PATH -) as one file called --name. Several inputs
share one namespace: two inputs mapping to the same name stop the run.
Each file gets the cheapest coder that gives it back byte for byte:
a bundled model (grey, black-and-white and RGB images whose file can be
rebuilt from its pixels: every other chunk, comment and trailing byte
is kept verbatim), JPEG-XL lossless for such images no model codes
better, JPEG files recompressed losslessly by JPEG-XL, else LZMA2 (or
the raw bytes). No file costs more than storing it; `bbans info` says
which coder each got and why. Decompression gives back every byte. Symlinks inside
folders are stored as links; fifos, sockets and devices are skipped
with a warning. An input is never overwritten, even with -f."""))
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Archive to write; - for standard output [default: PATH.bb for one PATH].")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the archive to standard output.")
@click.option("--name", "stdin_name", default="stdin", show_default=True,
              help="File name under which standard input (PATH -) is stored.")
@click.option("--K", "K", type=click.IntRange(0, schema.MAX_K), default=0, show_default=True,
              help="Adam steps of per-image optimal inference (0: amortised encoder only).")
@click.option("--model", type=click.Choice(["auto", "none", *registry.NAMES]), default="auto", show_default=True,
              help="auto: per file the cheapest of the bundled models, JPEG-XL and storing; NAME: that model "
                   "for every image it serves; none: store everything (LZMA2).")
@click.option("--encoder", type=click.Choice(["auto", "refit", "baseline"]), default="auto", show_default=True,
              help="Which bundled encoder computes the posteriors; auto: per model the one with the "
                   "lower test -ELBO (`bbans models` marks it).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the arithmetic runs; the archive decodes on any device.")
@click.option("--arithmetic", type=click.Choice(["exact-1", "float"]), default="exact-1", show_default=True,
              help="exact-1: the archive decodes bit-exactly on any machine, CPU or GPU; float: torch's "
                   "own kernels, faster, but decodes only on the same kind of machine and device class.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="Tiles per engine batch.")
@click.option("--lanes", type=click.IntRange(1, 1 << 16), default=None,
              help="Interleaved rANS lanes, 8 bytes each in the archive [default: 1 to 128, by the payload "
                   "the model predicts].")
@click.option("--keep", type=click.Choice(images.KEEP), default="bytes", show_default=True,
              help="bytes: model-code only images that come back byte for byte; pixels: also those "
                   "that come back as a rewritten file with the same pixels, mode, size and metadata.")
@click.option("--level", type=click.IntRange(1, 9), default=7, show_default=True,
              help="JPEG-XL effort for images no model codes better: 1 fastest, 9 smallest.")
@click.option("--verify", is_flag=True,
              help="Decode the new archive and compare every file with its input before keeping it.")
@click.option("-T", "--threads", type=click.IntRange(0, 64), default=0, show_default=True,
              help="CPU threads for the models (0: every core). Exact archives decode the same with any "
                   "count; a float one records it and is decoded with it.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing archive (or write one to a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary (warnings still shown).")
@click.option("-v", "--verbose", is_flag=True, help="List every entry.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def compress_cmd(paths, output, to_stdout, stdin_name, K, model, encoder, device, arithmetic, batch_size, lanes,
                 keep, level, verify, threads, force, quiet, verbose, as_json):
    """Compress image files and folders PATH... into one archive."""
    from bbans.archive import atomic, reader, writer

    if to_stdout or output == STREAM:
        if output not in (None, STREAM):
            raise click.UsageError("-c writes to standard output; it cannot be combined with -o FILE")
        output = STREAM
        if as_json:
            raise click.UsageError("--json prints on standard output, which -c gives to the archive")
    elif output is None:
        if len(paths) != 1 or paths[0] == STREAM:
            raise click.UsageError("give the archive's name with -o FILE (or -c for standard output)")
        output = paths[0].rstrip("/" + os.sep) + ".bb"
    if list(paths).count(STREAM) > 1:
        raise click.UsageError("standard input (-) can be read only once")
    if output != STREAM:
        _check_output(output, paths, force)
    else:
        sink = _stdout_binary(force, "an archive")
    opts = writer.Options(model=model, encoder=encoder, K=K, device=device, batch_size=batch_size, lanes=lanes,
                          keep=keep, level=level, arithmetic=arithmetic, threads=threads)
    piped_in = contextlib.nullcontext() if STREAM not in paths else tempfile.TemporaryDirectory(prefix=".bbans-stdin-")
    with _progress(quiet, as_json) as prog, piped_in as tmp:
        roots = list(paths)
        if STREAM in roots:
            schema.check_name(stdin_name)
            if "/" in stdin_name:
                raise BBANSError(f"--name {stdin_name!r} must be a file name, not a path")
            piped = os.path.join(tmp, stdin_name)
            with open(piped, "wb") as f:
                f.write(_read_stdin("PATH - reads a file"))
            roots[roots.index(STREAM)] = piped
        data, rep = writer.create(roots, opts, progress=prog, warn=_warn)
        if output == STREAM:
            if verify:
                reader.verify(data, prog, expect=rep["sha256"])
            sink.write(data)
            sink.flush()
        else:
            # Verified as written: the temporary file is read back before it takes the name.
            check = (lambda tmp: reader.verify(tmp, prog, expect=rep["sha256"])) if verify else None
            atomic.write_atomic(output, data, check)
    rep["archive"] = output
    rep["verified"] = bool(verify)
    for note in rep["notes"]:
        _warn(note)
    if as_json:
        _dump_json(rep)
    elif not quiet:
        # With the archive on standard output, the summary goes to standard error.
        con = _console(err=output == STREAM)
        if verbose:
            _print_entries(con, rep)
        _print_summary(con, rep, f"wrote {'standard output' if output == STREAM else output}")
        if verify:
            con.print("  verified: every file decodes to the bytes of its input")


def _check_output(output: str, paths, force: bool) -> None:
    if os.path.isdir(output):
        raise BBANSError(f"{output} is a folder; give the archive's file name")
    if os.path.lexists(output):
        _refuse_overwriting_an_input(output, paths)
        if not force:
            raise BBANSError(f"{output} exists; use -f to overwrite it")
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise BBANSError(f"{out_dir}: no such folder")


def _refuse_overwriting_an_input(output: str, paths) -> None:
    """An existing output that is, or lies inside, an input would be read and then replaced."""
    real = os.path.realpath(output)
    for p in paths:
        if p == STREAM:
            continue
        root = os.path.realpath(p)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            raise BBANSError(f"{output} is one of the inputs ({p}); refusing to overwrite it, even with -f")


# ---- decompress ------------------------------------------------------------------------------


def _default_outdir(path: str) -> str:
    base = path[:-3] if path.endswith(".bb") and len(os.path.basename(path)) > 3 else path + ".out"
    return base


def _check_device(device: str) -> None:
    """--device cuda must be usable here (whether the archive's groups decode there is the reader's
    rule: float ones only on the device class they were coded on)."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BBANSError("--device cuda asked for, but torch sees no CUDA device here")


@click.command("decompress", epilog=epilog("""\b
Examples:
  bbans decompress digits.bb              # into digits/ beside it
  bbans decompress digits.bb -o restored/
  bbans decompress digits.bb -o restored/ -f
  cat digits.bb | bbans decompress - -o restored/
  bbans decompress scan.bb -c > scan.png  # an archive of one file

\b
Every file comes back byte for byte (archives made with --keep pixels:
those images come back with the same pixels, mode, size and metadata in
their own format). Everything is decoded and checked in a staging folder
before it is moved into place: a failed run leaves nothing behind.
Symlinks whose target would lie outside DIR are not restored (warning).
ARCHIVE - reads standard input; -c (or -o -) writes the only file of a
one-file archive to standard output, after it is decoded and checked."""))
@click.argument("archive_path", metavar="ARCHIVE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False, allow_dash=True),
              help="Folder to restore into; - for standard output [default: ARCHIVE without .bb].")
@click.option("-c", "--stdout", "to_stdout", is_flag=True,
              help="Write the archive's only file to standard output.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to decode: auto is a GPU where there is one (archives in float arithmetic: "
                   "the device class they were coded on); cpu or cuda insist on that one.")
@click.option("-T", "--threads", type=click.IntRange(0, 64), default=0, show_default=True,
              help="CPU threads for the models (0: every core); a float archive uses the count it records.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing files in the output folder (or write to a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def decompress_cmd(archive_path, outdir, to_stdout, device, threads, force, quiet, as_json):
    """Restore every entry of ARCHIVE under a folder."""
    from bbans.archive import extract, reader

    if to_stdout or outdir == STREAM:
        if outdir not in (None, STREAM):
            raise click.UsageError("-c writes to standard output; it cannot be combined with -o DIR")
        if as_json:
            raise click.UsageError("--json prints on standard output, which -c gives to the file")
        sink = _stdout_binary(force, "a file")
        source, name = _source(archive_path)
        _check_device(device)
        with _progress(quiet, False) as prog:
            path, data = reader.read_one(source, prog, name, device, threads)
        sink.write(data)
        sink.flush()
        if not quiet:
            click.echo(f"restored {path} ({_fmt_bytes(len(data))}) to standard output", err=True)
        return
    if outdir is None:
        if archive_path == STREAM:
            raise click.UsageError("reading the archive from standard input: give -o DIR, or -c for its only file")
        outdir = _default_outdir(archive_path)
    source, name = _source(archive_path)
    _check_device(device)
    with _progress(quiet, as_json) as prog:
        rep = extract.extract(source, outdir, force=force, progress=prog, warn=_warn, name=name, device=device,
                              threads=threads)
    if as_json:
        _dump_json(rep)
    elif not quiet:
        click.echo(f"restored {rep['files']} file(s), {rep['entries']} entries, into {rep['outdir']}")


# ---- info ------------------------------------------------------------------------------------


@click.command("info", epilog=epilog("""\b
Examples:
  bbans info digits.bb
  bbans info digits.bb --json
  cat digits.bb | bbans info -"""))
@click.argument("archive_path", metavar="ARCHIVE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info_cmd(archive_path, as_json):
    """Describe ARCHIVE: models, K, device class, entries with sizes and bits/dim, overhead."""
    from bbans.archive import reader

    source, name = _source(archive_path)
    rep = reader.info(source, name)
    if as_json:
        _dump_json(rep)
        return
    con = _console()
    cb = rep.get("created_by", {})
    con.print(f"{name or archive_path}: bbans archive format {rep['format']}, made by bbans {cb.get('bbans', '?')}"
              + (f", coded on {rep['device']}" if rep.get("device") else ""))
    _print_entries(con, rep)
    _print_summary(con, rep, "total")
    for g in rep["groups"]:
        v = g.get("versions", {})  # kept for float groups, whose bits depend on them
        made = " coded with " + ", ".join(f"{k} {v[k]}" for k in sorted(v)) + ";" if v else ":"
        con.print(f"  {g['model']}{made} lanes {g['lanes']}, batch size {g['batch_size']}, latents of "
                  f"{g['latent_bits']} bits"
                  + (f", {g['uncoded_channels']} latent channel(s) uncoded" if g["uncoded_channels"] else ""))


# ---- models ----------------------------------------------------------------------------------


@click.command("models", epilog=epilog("""\b
Examples:
  bbans models
  bbans models --json"""))
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models_cmd(as_json):
    """List the bundled models, the images each serves and their test bits/dim."""
    from bbans.models import catalog

    have = catalog.by_name()
    rows = []
    for name in registry.NAMES:
        meta = have.get(name)
        row = {"name": name, "bundled": meta is not None, "serves": registry.spec(name).serves}
        if meta is not None:
            encs = meta.get("encoders", {})
            row["test_bits_per_dim"] = {k: v.get("test_bits_per_dim") for k, v in encs.items()
                                        if isinstance(v, dict)} or meta.get("test_bits_per_dim")
            control = meta.get("control")
            if isinstance(control, dict) and isinstance(row["test_bits_per_dim"], dict):
                # The refit's fair control (alpha 0, same steps): measured, not bundled.
                row["test_bits_per_dim"]["control"] = control.get("test_bits_per_dim")
            row["default_encoder"] = catalog.better_encoder(meta)
            row["hash"] = meta.get("hash")
        rows.append(row)
    if as_json:
        _dump_json(rows)
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for col in ("model", "bundled", "test bits/dim", "serves"):
        t.add_column(col)
    for r in rows:
        bpd = r.get("test_bits_per_dim")
        if isinstance(bpd, dict):
            bpd = ", ".join(f"{k} {v:.4f}" + ("*" if k == r.get("default_encoder") else "")
                            + (" (not bundled)" if k == "control" else "")
                            for k, v in bpd.items() if isinstance(v, (int, float)))
        elif isinstance(bpd, (int, float)):
            bpd = f"{bpd:.3f}"
        t.add_row(r["name"], "yes" if r["bundled"] else "no", bpd or "", r["serves"])
    _console().print(t)
    if any(r["bundled"] for r in rows):
        click.echo("* the encoder compress uses (--encoder auto): the lower test -ELBO")
    else:
        click.echo("no models bundled: every file is stored with LZMA2", err=True)
