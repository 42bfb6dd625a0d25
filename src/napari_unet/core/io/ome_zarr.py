"""Images read lazily from disk, and results written to OME-Zarr.

Large images are never loaded whole: :class:`LazyImage` opens a TIFF (through
tifffile's zarr interface), a zarr array or an OME-Zarr image on first use
and reads only the pixels asked for. It can be pickled (it reopens the file
in the process that unpickles it), so dask.distributed workers can read
their own blocks.

Results go to an OME-Zarr image (NGFF 0.4, zarr format 2: napari with
napari-ome-zarr, Fiji's N5/Zarr reader, BigDataViewer and Python's zarr all
read it) with a pyramid of down-sampled levels, so viewers can show a huge
result without loading it. The output is written to a hidden folder beside
the target and renamed into place when complete (:class:`ZarrOutput`), so a
failed or cancelled run never leaves a half-written result under the
target's name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.atomic import OutputError, disk_full_error, exists_message, is_disk_full
from napari_unet.core.io.leftovers import clean_leftovers, partial_name, tree_size
from napari_unet.core.io.tiff import ImageReadError

ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".tif", ".tiff")
#: NGFF names of axes, for the multiscales metadata.
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr is a dependency
        raise ImportError("large images need the 'zarr' package: pip install zarr") from exc
    return zarr


class LazyImage:
    """An image on disk, read piece by piece.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF file (``.tif``/``.tiff``), a zarr array, or an OME-Zarr image
        (a zarr group with ``multiscales`` metadata; its first, full-resolution
        level is read).
    key : str, optional
        Array inside a zarr group (default: the first multiscale level, or
        the only array).

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    axes : str or None
        Axis letters (e.g. ``"ZYX"``) when the file records them.
    scale : tuple of float or None
        Pixel size per axis when the file records it.
    """

    def __init__(self, path: str | os.PathLike, /, *, key: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.key = key
        self._array: Any = None
        self._store: Any = None
        self.axes: str | None = None
        self.scale: tuple[float, ...] | None = None
        array = self._open()
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._open()[key])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = state["_store"] = None  # file handles stay in the process that opened them
        return state

    def close(self) -> None:
        """Close the file (a TIFF stays open between reads); the next read opens it again."""
        store, self._store, self._array = self._store, None, None
        if store is not None:
            store.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report while being collected
            pass

    def __repr__(self) -> str:
        return f"LazyImage({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def _open(self) -> Any:
        if self._array is not None:
            return self._array
        if not self.path.exists():
            raise ImageReadError(f"{self.path} does not exist")
        suffix = self.path.suffix.lower()
        try:
            if suffix in TIFF_SUFFIXES:
                self._array = self._open_tiff()
            else:
                self._array = self._open_zarr()
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
            raise ImageReadError(f"{self.path.name} could not be opened as an image ({exc})") from exc
        return self._array

    def _open_tiff(self) -> Any:
        import tifffile

        zarr = _zarr()
        with tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            self.axes = series.axes.upper().replace("S", "C")
        self._store = store = tifffile.imread(self.path, aszarr=True)
        array = zarr.open(store, mode="r")
        if not hasattr(array, "shape"):  # a pyramidal TIFF: level 0
            array = array[self.key or "0"]
        return array

    def _open_zarr(self) -> Any:
        zarr = _zarr()
        node = zarr.open(str(self.path), mode="r")
        if hasattr(node, "shape"):
            return node
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if self.key is None and multiscales:
            level = multiscales[0]["datasets"][0]
            self.key = level["path"]
            self.axes = (
                "".join(a["name"] if isinstance(a, dict) else a for a in multiscales[0].get("axes", [])).upper() or None
            )
            for transform in level.get("coordinateTransformations", []):
                if transform.get("type") == "scale":
                    self.scale = tuple(float(s) for s in transform["scale"])
        if self.key is None:
            arrays = [name for name, _ in node.arrays()]
            if len(arrays) != 1:
                raise ImageReadError(f"{self.path.name} holds {len(arrays)} arrays; say which one to read")
            self.key = arrays[0]
        return node[self.key]


def is_lazy_path(path: str | os.PathLike, /) -> bool:
    """Whether a path names a zarr store (read lazily) rather than a TIFF file."""
    path = Path(path)
    markers = (".zgroup", ".zarray", "zarr.json")
    return path.suffix.lower() in ZARR_SUFFIXES or (path.is_dir() and any((path / m).exists() for m in markers))


class ZarrOutput:
    """An OME-Zarr result being written; appears under its name only when complete.

    Parameters
    ----------
    path : str or os.PathLike
        Where the result goes (a ``.zarr`` folder).
    shape : tuple of int
        Full-resolution shape.
    dtype : numpy dtype
        Pixel type.
    chunks : tuple of int
        Chunk shape; blocks written by different processes must cover whole
        chunks.
    axes : str
        Axis letters, one per dimension (e.g. ``"YX"``, ``"ZYX"``, ``"CYX"``).
    scale : sequence of float, optional
        Pixel size per axis.
    unit : str, optional
        Unit of the spatial axes (e.g. ``"micrometer"``).
    attributes : dict, optional
        Extra metadata stored under ``"napari-unet"``.
    overwrite : bool
        Replace an existing result at ``path`` when this one completes. If
        False, a result is refused before any work when ``path`` exists, and
        :meth:`commit` refuses too when something appeared at ``path``
        meanwhile: it is left untouched and the new result is kept under
        another name (see :meth:`commit`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        /,
        *,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        axes: str,
        scale: Sequence[float] | None = None,
        unit: str | None = None,
        attributes: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        zarr = _zarr()
        self.path = Path(path).expanduser()
        if len(axes) != len(shape):
            raise ValueError(f"axes {axes!r} do not match a shape of {len(shape)} dimensions")
        if self.path.exists() and not overwrite:
            raise OutputError(exists_message(self.path))
        if not self.path.parent.is_dir():
            raise OutputError(f"the folder {self.path.parent} does not exist")
        self.overwrite = overwrite
        clean_leftovers(self.path.parent)
        self.partial = self.path.parent / partial_name(self.path.name, uuid.uuid4().hex[:8])
        self.shape, self.axes = tuple(int(s) for s in shape), axes.lower()
        self.scale = tuple(float(s) for s in scale) if scale is not None else (1.0,) * len(shape)
        self.unit = unit
        try:
            group = zarr.open_group(str(self.partial), mode="w", zarr_format=2)
            group.create_array("0", shape=self.shape, chunks=tuple(int(c) for c in chunks), dtype=dtype, fill_value=0)
        except OSError as exc:
            self.raise_if_disk_full(exc)
            shutil.rmtree(self.partial, ignore_errors=True)
            raise OutputError(f"cannot write into {self.path.parent}: {exc.strerror or exc}") from exc
        self._attributes = dict(attributes or {})
        self._levels = 1

    @property
    def level0_path(self) -> str:
        """Path of the full-resolution array while it is being written (for other processes)."""
        return str(self.partial / "0")

    def array(self, level: int = 0) -> Any:
        """The zarr array of a level, open for writing."""
        return _zarr().open_array(str(self.partial / str(level)), mode="r+")

    def add_pyramid(self, *, min_size: int = 512, labels: bool = True) -> int:
        """Write down-sampled levels (factor 2 in Y and X) until the plane fits ``min_size``.

        Labels are down-sampled by taking every second pixel, so every level
        holds real object IDs; other data by averaging 2 x 2 pixels. Memory
        stays bounded: one plane and a 2 x 2 square of chunks at a time.

        Returns
        -------
        int
            Number of levels, the full resolution included.
        """
        zarr = _zarr()
        source = self.array(0)
        level = 0
        while max(source.shape[-2:]) > min_size:
            level += 1
            shape = (*source.shape[:-2], -(-source.shape[-2] // 2), -(-source.shape[-1] // 2))
            group = zarr.open_group(str(self.partial), mode="r+", zarr_format=2)
            target = group.create_array(str(level), shape=shape, chunks=source.chunks, dtype=source.dtype, fill_value=0)
            rows, cols = source.chunks[-2] * 2, source.chunks[-1] * 2
            n_stack = source.ndim - (2 if labels else 3)  # probabilities keep their channel axis together
            for plane in np.ndindex(*source.shape[:n_stack]):
                for y0 in range(0, source.shape[-2], rows):
                    for x0 in range(0, source.shape[-1], cols):
                        tile = np.asarray(source[(*plane, Ellipsis, slice(y0, y0 + rows), slice(x0, x0 + cols))])
                        small = tile[..., ::2, ::2] if labels else _mean_2x2(tile)
                        target[
                            (
                                *plane,
                                Ellipsis,
                                slice(y0 // 2, y0 // 2 + small.shape[-2]),
                                slice(x0 // 2, x0 // 2 + small.shape[-1]),
                            )
                        ] = small
            source = target
        self._levels = level + 1
        return self._levels

    def commit(self) -> Path:
        """Write the metadata and move the result to its name (replacing an old one when allowed).

        Raises
        ------
        OutputError
            ``overwrite`` is False and something appeared at the path while
            the result was written: it is left as it is, and the complete
            result is kept beside it as ``<name>.unsaved-XXXXXXXX.zarr``; the
            message names both.
        """
        zarr = _zarr()
        group = zarr.open_group(str(self.partial), mode="r+", zarr_format=2)
        group.attrs["multiscales"] = [self._multiscales()]
        group.attrs["napari-unet"] = json.loads(json.dumps(self._attributes))
        if not self.overwrite:
            return self._commit_no_replace()
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
        os.replace(self.partial, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def _commit_no_replace(self) -> Path:
        """Move the result to its name only if nothing is there, even something that appeared meanwhile."""
        try:
            _rename_no_replace(self.partial, self.path)
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            kept = self.path.with_name(f"{image_stem_of(self.path)}.unsaved-{uuid.uuid4().hex[:8]}.zarr")
            os.replace(self.partial, kept)
            raise OutputError(
                f"{exists_message(self.path)}. It appeared while this result was written; the new result "
                f"was kept as {str(kept)!r}"
            ) from exc
        return self.path

    def raise_if_disk_full(self, exc: BaseException) -> None:
        """Raise the full-disk :class:`OutputError` (removing what was written) if ``exc`` says the disk is full.

        Call it from an ``except`` clause around the writing; other errors are left to the caller.
        """
        if is_disk_full(exc) and not isinstance(exc, OutputError):
            needed = tree_size(self.partial)
            self.discard()
            raise disk_full_error(self.path, needed=needed) from exc

    def discard(self) -> None:
        """Remove what was written (after a failure or cancel)."""
        shutil.rmtree(self.partial, ignore_errors=True)

    def _multiscales(self) -> dict[str, Any]:
        axes = []
        for letter in self.axes:
            entry: dict[str, Any] = {"name": letter, "type": _AXIS_TYPES.get(letter, "space")}
            if self.unit and letter in "zyx":
                entry["unit"] = self.unit
            axes.append(entry)
        datasets = []
        for level in range(self._levels):
            factor = [2.0**level if letter in "yx" else 1.0 for letter in self.axes]
            scale = [s * f for s, f in zip(self.scale, factor)]
            datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
        return {"version": "0.4", "name": self.path.stem, "axes": axes, "datasets": datasets}


def image_stem_of(path: Path) -> str:
    """``path``'s name without ``.zarr`` (and ``.ome``)."""
    name = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _rename_no_replace(source: Path, target: Path) -> None:
    """Rename the folder ``source`` to ``target``; ``FileExistsError`` if anything is at ``target``.

    :func:`os.rename` replaces an empty folder on POSIX and fails on a full one
    or a file (Windows never replaces), so the name is first reserved with
    :func:`os.mkdir`, which fails atomically if anything has it; only the empty
    folder made here is then replaced. If something is put into it meanwhile,
    the rename fails and that is left alone.
    """
    if os.name == "nt":  # pragma: no cover - Windows: rename never replaces
        os.rename(source, target)
        return
    os.mkdir(target)
    try:
        os.rename(source, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.rmdir(target)  # only if still empty: never what another process wrote
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(exc.errno, exc.strerror, str(target)) from exc
        raise


def open_result(path: str | os.PathLike, /) -> list[Any]:
    """The levels of an OME-Zarr result, full resolution first, as lazy zarr arrays.

    napari shows a list of arrays as a multiscale layer (only the visible
    part of the level that fits the screen is read).
    """
    zarr = _zarr()
    group = zarr.open_group(str(Path(path).expanduser()), mode="r")
    datasets = group.attrs["multiscales"][0]["datasets"]
    return [group[d["path"]] for d in datasets]


def _mean_2x2(band: np.ndarray) -> np.ndarray:
    h, w = band.shape[-2:]
    padded = np.pad(band.astype(np.float32), [(0, 0)] * (band.ndim - 2) + [(0, h % 2), (0, w % 2)], mode="edge")
    return (
        padded.reshape(*padded.shape[:-2], padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2)
        .mean(axis=(-3, -1))
        .astype(band.dtype)
    )
