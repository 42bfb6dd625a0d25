"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from napari_unet.core.errors import UserError
from napari_unet.core.io.leftovers import clean_leftovers, partial_name


class OutputError(UserError, OSError):
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

    A new file gets the permissions a plain ``open(path, "wb")`` would give
    it (``0o666`` less the umask); a replaced file keeps its permissions.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise OutputError(f"the folder {str(folder)!r} does not exist; create it or choose another output")
    if not overwrite and path.exists():
        raise OutputError(f"{str(path)!r} already exists; choose another name or allow overwriting")
    clean_leftovers(folder)
    try:
        tmp = _create_temporary(folder, path.name)
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
        mode = _existing_mode(path)
        if mode is not None:
            os.chmod(tmp, mode)
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
                    raise OutputError(
                        f"{str(path)!r} already exists; choose another name or allow overwriting"
                    ) from None
                os.replace(tmp, path)  # file systems without hard links
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    except BaseException as exc:
        written = _size(tmp)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            if is_disk_full(exc):
                raise disk_full_error(path, needed=written + (_shortfall(exc) or 0)) from exc
            if isinstance(exc, PermissionError):
                raise OutputError(f"no permission to write {str(path)!r}; choose another folder") from exc
            raise OutputError(f"writing {str(path)!r} failed ({exc.strerror or exc}); nothing was written") from exc
        raise


#: numpy's ``tofile`` (which tifffile uses) reports a short write without an errno.
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
_MB = 1_000_000


def is_disk_full(exc: BaseException, /) -> bool:
    """Whether ``exc`` says that the disk (or the user's quota) is full.

    Besides ``ENOSPC`` and ``EDQUOT``, a short write (``"N requested and M
    written"``, numpy's words when the disk fills during :meth:`numpy.ndarray.tofile`)
    counts as a full disk.
    """
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return exc.errno is None and _shortfall(exc) is not None


def disk_full_error(path: str | os.PathLike, /, *, needed: int | None = None) -> OutputError:
    """The :class:`OutputError` for a full disk while writing ``path``; nothing of it is kept.

    Parameters
    ----------
    path : path-like
        The file or folder that could not be written.
    needed : int, optional
        Bytes the output needs at least, when known.

    Returns
    -------
    OutputError
        A message naming the folder, its free space and how much to free
        (when known), e.g. ``the disk is full: 'out/a.tif' needs at least
        8 MB and the disk holding 'out' has 1 MB free; free at least 7 MB
        there or write elsewhere. Nothing was written to 'out/a.tif'``.
    """
    path = Path(path)
    folder = str(path.parent) if str(path.parent) else "."
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    where = f"the disk holding {folder!r}" + (f" has {free // _MB} MB free" if free is not None else "")
    if needed:
        missing = -(-max(needed - (free or 0), 1) // _MB)
        head = f"the disk is full: {str(path)!r} needs at least {-(-needed // _MB)} MB and {where}"
        advice = f"free at least {missing} MB there or write elsewhere"
    else:
        head = f"the disk is full: {where}"
        advice = "free space there or write elsewhere"
    return OutputError(f"{head}; {advice}. Nothing was written to {str(path)!r}")


def _shortfall(exc: OSError) -> int | None:
    """Bytes that a short write (numpy's ``"N requested and M written"``) did not write."""
    match = _SHORT_WRITE.search(str(exc))
    return int(match[1]) - int(match[2]) if match else None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _create_temporary(folder: Path, name: str) -> str:
    """Create a new, empty temporary file for ``name`` in ``folder``; return its path.

    Unlike :func:`tempfile.mkstemp` (mode ``0o600``), the file is created with
    mode ``0o666`` so that the process umask applies, exactly as for a plain
    :func:`open`: saved models and exports are readable by the usual people.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / partial_name(name, secrets.token_hex(4))
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(tmp)
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def _existing_mode(path: Path) -> int | None:
    """Permissions of the file being replaced, or None if there is none (new file)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes, /, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite) as fh:
        fh.write(data)
