"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
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
        os.close(fd)
    except PermissionError as exc:
        raise OutputError(f"no permission to write in {str(folder)!r}; choose another folder") from exc
    except OSError as exc:
        raise OutputError(f"cannot write in {str(folder)!r}: {exc.strerror or exc}") from exc
    try:
        # reopen by name: the file object then has a real .name (tifffile needs it)
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _final_mode(path))
        if overwrite:
            os.replace(tmp, path)
        else:
            # link fails if `path` appeared meanwhile: never replace a file silently
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise OutputError(f"{str(path)!r} already exists; choose another name or allow overwriting") from exc
            except OSError:
                if path.exists():
                    raise OutputError(f"{str(path)!r} already exists; choose another name or allow overwriting") from None
                os.replace(tmp, path)  # file systems without hard links
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputError(f"the disk is full; nothing was written to {str(path)!r}. Free space and retry") from exc
            if isinstance(exc, PermissionError):
                raise OutputError(f"no permission to write {str(path)!r}; choose another folder") from exc
            raise OutputError(f"writing {str(path)!r} failed ({exc.strerror or exc}); nothing was written") from exc
        raise


def _final_mode(path: Path) -> int:
    """Permissions for the new file: the old file's, else rw-r--r--.

    (Reading the umask would mean changing it for a moment, which is not safe
    while other threads create files.)
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o644


def atomic_write_bytes(path: str | os.PathLike, data: bytes, /, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data)
