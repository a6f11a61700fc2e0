"""Files written whole or not at all: the one atomic-write helper of the package."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tennis_exp.errors import UserError


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
