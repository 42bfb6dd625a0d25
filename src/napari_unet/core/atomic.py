"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class OutputError(OSError):
    """A file could not be written; the message says why and what to do."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, /, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    Parameters
    ----------
    path : path-like
        The final destination.
    overwrite : bool
        If False and ``path`` exists, raise :class:`OutputError` before
        writing anything.

    Notes
    -----
    The temporary file lives in the destination folder so that the final
    :func:`os.replace` is atomic on every platform. If the body raises
    (including ``KeyboardInterrupt`` or a full disk), the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"the folder {str(folder)!r} does not exist; create it or choose another output")
    if not overwrite and path.exists():
        raise OutputError(f"{str(path)!r} already exists; choose another name or allow overwriting")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except PermissionError as exc:
        raise OutputError(f"no permission to write in {str(folder)!r}; choose another folder") from exc
    except OSError as exc:
        raise OutputError(f"cannot write in {str(folder)!r}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            if exc.errno == 28:  # ENOSPC
                raise OutputError(f"the disk is full; nothing was written to {str(path)!r}. Free space and retry") from exc
            raise OutputError(f"writing {str(path)!r} failed ({exc.strerror or exc}); nothing was written") from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, /, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[BinaryIO], None], /, *, overwrite: bool = True) -> None:
    """Call ``writer(file_object)`` on a temporary file, then move it to ``path``."""
    with atomic_output(path, overwrite=overwrite) as fh:
        writer(fh)
