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
    if not folder.is_dir():
        raise OutputError(_missing_folder(folder))
    if not overwrite and path.exists():
        raise OutputError(exists_message(path))
    clean_leftovers(folder)
    try:
        tmp = _create_temporary(folder, path.name)
    except OSError as exc:
        raise OutputError(_cannot_write(folder, exc)) from exc
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
            _commit_no_replace(tmp, path)
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


#: Bytes the probe of :func:`probe_writable` writes: one block of most file systems.
_PROBE_BYTES = 4096


def exists_message(path: Path, /) -> str:
    """The refusal for an output that exists (also one that appeared while the job ran)."""
    return (
        f"{str(path)!r} already exists and was left as it is; choose another name, move it away, "
        "or allow overwriting (--overwrite on the command line, overwrite=True in Python)"
    )


def _commit_no_replace(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has that name, even one that appeared meanwhile.

    A hard link fails if ``path`` exists, atomically. File systems without hard
    links get the name reserved with an exclusive create first, then replaced.
    ``tmp`` is removed in every case.
    """
    try:
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise OutputError(exists_message(path)) from exc
        except OSError:  # file systems without hard links
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except FileExistsError as exc:
                raise OutputError(exists_message(path)) from exc
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _missing_folder(folder: Path) -> str:
    """Why ``folder`` (which is not a folder) cannot take an output: missing, or under a regular file."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        return (
            f"{str(blocker)!r} is a file, not a folder, so nothing can be written in {str(folder)!r}; "
            "choose another output"
        )
    return f"the folder {str(folder)!r} does not exist; create it or choose another output"


def probe_writable(folder: str | os.PathLike, /, *, create: bool = False) -> None:
    """Check, before any work, that files can be written in ``folder``.

    A probe file of one block (4 KiB) is created in the folder and removed
    again, so a read-only folder or a full disk is found before the work,
    not after it.

    Parameters
    ----------
    folder : path-like
        Where outputs will go.
    create : bool
        A missing folder is created (as a batch does with its output
        folder); if False, a missing folder is an error.

    Raises
    ------
    OutputError
        The folder is missing (or a part of its path is a regular file),
        cannot be created, is read-only, or the disk refuses a new file; the
        message says which and what to do.

    Examples
    --------
    >>> import tempfile
    >>> probe_writable(tempfile.mkdtemp())
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        if not create:
            raise OutputError(_missing_folder(folder))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                _cannot_write(folder, exc) if folder.parent.is_dir() else _missing_folder(folder)
            ) from exc
    try:
        probe = _create_temporary(folder, "napari-unet-probe")
    except OSError as exc:
        raise OutputError(_cannot_write(folder, exc)) from exc
    try:
        with open(probe, "wb") as fh:
            fh.write(bytes(_PROBE_BYTES))  # a full disk refuses a block, not always an empty file
    except OSError as exc:
        raise OutputError(_cannot_write(folder, exc)) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


def _cannot_write(folder: Path, exc: OSError) -> str:
    """Why no file can be made in ``folder``, in words that say what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {str(folder)!r} is full; free space or choose another output folder"
    if exc.errno == errno.EROFS:
        return f"{str(folder)!r} is on a read-only file system; choose another output folder"
    if isinstance(exc, PermissionError):
        return f"no permission to write in {str(folder)!r}; choose another folder"
    return f"cannot write in {str(folder)!r} ({exc.strerror or exc}); choose another output folder"


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
