"""Files that appear whole or not at all: written beside their destination, synced, renamed."""

from __future__ import annotations

import os
import secrets
from typing import Callable


def fsync_dir(path: str) -> None:
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


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str, data: bytes, check: Callable[[str], None] | None = None) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync, optional check of
    the temporary file, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    # The name is chosen before the file exists, so a signal at any point after it is created
    # (even inside the open call) still finds it to remove.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)
