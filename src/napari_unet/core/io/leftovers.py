"""Hidden leftovers of interrupted writes: recognisable names, cleaned up or reported.

A write goes to a hidden temporary file (or folder, for a ``.zarr`` result) beside
its target and is renamed into place when complete. A process that is killed
(``SIGKILL``, a power cut, an out-of-memory kill) cannot remove its temporary, which
then stays behind. Temporaries are therefore named
``.NAME.PID.HOST.TOKEN.part``: the writing process's id, a short tag of its host and a
random token. At the start of every write into a folder, :func:`clean_leftovers`
removes the temporaries of processes of this host that no longer run, once they are
:data:`MIN_AGE_SECONDS` old, and reports (once per process) the others that look
abandoned: temporaries of older versions (``.NAME.TOKEN.part``,
``.NAME.part-TOKEN``), of other hosts, or too recent to remove.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_AGE_SECONDS", "Leftover", "LeftoverWarning", "clean_leftovers", "host_tag", "partial_name", "tree_size"]

#: A leftover is removed only once it has not changed for this long (a writer on a shared
#: file system, or a process id reused since, is then very unlikely).
MIN_AGE_SECONDS = 10 * 60
_CURRENT = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<host>[0-9a-f]{6})\.[0-9a-f]+\.part$")
_OLDER = re.compile(r"^\.(?P<name>.+)\.(?:[0-9a-f]{8}\.part|part-[0-9a-f]{8})$")
_MB = 1_000_000
_RECHECK_SECONDS = 60.0
_reported: set[str] = set()
_cleaned: dict[str, float] = {}


class LeftoverWarning(UserWarning):
    """A folder holds hidden leftovers of interrupted writes (removed or to check)."""


@dataclass(frozen=True)
class Leftover:
    """A hidden temporary file or folder of an interrupted write."""

    path: Path
    size: int
    removed: bool


def host_tag() -> str:
    """Six hex digits that tell this host from others sharing a folder."""
    return hashlib.blake2s(socket.gethostname().encode(), digest_size=3).hexdigest()


def partial_name(name: str, token: str, /) -> str:
    """The hidden temporary name for writing ``name``: ``.NAME.PID.HOST.TOKEN.part``."""
    return f".{name}.{os.getpid()}.{host_tag()}.{token}.part"


def clean_leftovers(folder: str | os.PathLike, /) -> list[Leftover]:
    """Remove the abandoned temporaries in ``folder``; warn about them and about those left.

    Parameters
    ----------
    folder : path-like
        The folder about to be written into.

    Returns
    -------
    list of Leftover
        What was found, removed or not (nothing that another running
        process may still be writing).

    Warns
    -----
    LeftoverWarning
        Once per process and leftover: what was removed (names and size),
        and leftovers kept that look abandoned, with what to do.
    """
    key = os.path.abspath(folder)
    if time.monotonic() - _cleaned.get(key, -_RECHECK_SECONDS) < _RECHECK_SECONDS:
        return []  # a batch writing many files into one folder lists it once a minute at most
    _cleaned[key] = time.monotonic()
    examined = (_examine(entry) for entry in _candidates(Path(folder)))
    found = [leftover for leftover in examined if leftover is not None]
    _report(Path(folder), found)
    return found


def _candidates(folder: Path) -> list[Path]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / name for name in names if name.startswith(".") and (_CURRENT.match(name) or _OLDER.match(name))]


def _examine(path: Path) -> Leftover | None:
    """The leftover at ``path``, removed if its process is gone; None if it is being written."""
    age = time.time() - _last_change(path)
    match = _CURRENT.match(path.name)
    if match and match["host"] == host_tag() and _is_running(int(match["pid"])):
        return None  # a running process (this one included) owns it
    if match is None and age < MIN_AGE_SECONDS:
        return None  # an older version's temporary, possibly still being written
    size = tree_size(path)
    if match and match["host"] == host_tag() and age >= MIN_AGE_SECONDS:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return Leftover(path, size, removed=not os.path.lexists(path))
    return Leftover(path, size, removed=False)


def _report(folder: Path, found: list[Leftover]) -> None:
    removed = [leftover for leftover in found if leftover.removed]
    kept = [leftover for leftover in found if not leftover.removed and str(leftover.path) not in _reported]
    if removed:
        warnings.warn(
            f"removed {_count(removed)} of interrupted writes from {str(folder)!r} ({_mb(removed)}): {_names(removed)}",
            LeftoverWarning,
            stacklevel=2,
        )
    if kept:
        _reported.update(str(leftover.path) for leftover in kept)
        warnings.warn(
            f"{str(folder)!r} holds {_count(kept)} of interrupted writes ({_mb(kept)}): {_names(kept)}; "
            f"napari-unet removes its own once their process has ended and they are "
            f"{MIN_AGE_SECONDS // 60} minutes old; delete the others if nothing is writing there any more",
            LeftoverWarning,
            stacklevel=2,
        )


def _count(found: list[Leftover]) -> str:
    return "1 hidden leftover" if len(found) == 1 else f"{len(found)} hidden leftovers"


def _mb(found: list[Leftover]) -> str:
    return f"{sum(leftover.size for leftover in found) / _MB:.1f} MB"


def _names(found: list[Leftover]) -> str:
    return ", ".join(leftover.path.name for leftover in found)


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (True when it cannot be told)."""
    if os.name == "nt":
        return True  # os.kill would end the process there; Windows leftovers are only reported
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's), or we cannot tell: keep it
    try:  # a killed process that its parent has not reaped yet is a zombie: it writes no more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _last_change(path: Path) -> float:
    """Latest modification time of ``path`` and, for a folder, of its entries and their entries."""
    try:
        latest = path.lstat().st_mtime
    except OSError:
        return time.time()
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            for child in os.scandir(path):
                latest = max(latest, child.stat(follow_symlinks=False).st_mtime)
    return latest


def tree_size(path: Path, /) -> int:
    """Bytes of a file, or of the files under a folder (0 if it is gone)."""
    if not path.is_dir() or path.is_symlink():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
