"""The package's file helpers, each written once: files written whole or not at all, the JSON
markers that say which settings made a folder, and advisory locks."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tennis_exp.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent writers then go unnoticed
    fcntl = None


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A private temporary file beside `path`, synced and renamed into place when the block
    succeeds: a kill mid-write keeps the previous file (or none), and concurrent writers of
    the same file each rename a complete one. A full disk is a user error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(
                f"no space left to write {path} ({err.strerror}); "
                + ("the previous one is kept" if path.exists() else "nothing was written")
            ) from None
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def read_marker(path: Path) -> dict | None:
    """The settings a marker file holds, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_marker(path: Path, settings: dict) -> None:
    write_text(path, json.dumps(settings, indent=2, sort_keys=True))


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock on the file `path` (created if missing), held until the block
    ends: yields True, or False (holding nothing) when `wait` is False and another process holds
    it. The OS releases a dead process's locks. Without fcntl (Windows) it always yields True."""
    if fcntl is None:
        yield True
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
