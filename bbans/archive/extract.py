"""Extracting an archive: decode into a staging folder beside the output and only then move the
result into place, so a failed run leaves nothing behind and nothing lands outside the folder."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from bbans.archive import schema
from bbans.archive.atomic import fsync_dir, umask
from bbans.archive.format import FILE_KINDS, STAGING_PREFIX, Progress, Reader, Warn, noop_progress, noop_warn
from bbans.archive.reader import decode_entries
from bbans.errors import BBANSError

# ---- extract ---------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


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


def extract(archive_path, outdir: str, force: bool = False, progress: Progress = noop_progress,
            warn: Warn = noop_warn, name: str | None = None, device: str = "auto", threads: int = 0) -> dict:
    """Restore the archive under `outdir`. Everything is decoded and checked in a staging folder
    first; only then is it moved into place. A failure removes whatever this run created."""
    with Reader(archive_path, name) as r:
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
            skipped = _write_staging(r, staging, progress, warn, device, threads)
            if fresh:
                os.chmod(staging, 0o777 & ~umask())
                try:
                    os.rename(staging, outdir)
                except OSError as exc:
                    raise BBANSError(f"cannot create {outdir}: {exc.strerror}") from None
                fsync_dir(parent)
            else:
                _place(r.entries, staging, outdir, force, placed, skipped, warn)
                shutil.rmtree(staging, ignore_errors=True)
                fsync_dir(outdir)
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
        n_files = sum(1 for e in r.entries if e["kind"] in FILE_KINDS)
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


def _write_staging(r: Reader, staging: str, progress: Progress, warn: Warn, device: str, threads: int) -> list[dict]:
    total = len(r.entries)
    links, dirs, skipped = [], [], []
    done = 0
    for d in decode_entries(r, progress, device, threads):
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
