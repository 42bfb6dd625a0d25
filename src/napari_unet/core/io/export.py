"""Exporting results as TIFF files: a plan of files, then a job that writes them.

The Export widget (and scripts) describe each file as an :class:`ExportItem`
and hand the list to :func:`export_job`, a generator that writes one file per
step with :mod:`napari_unet.core.io.tiff` (atomic writes: a file is either
complete or absent) and yields a :class:`~napari_unet.core.progress.Progress`
before each. Stopping the generator between files is how a GUI cancels.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_unet.core.io.measurements import measure_objects, write_measurements
from napari_unet.core.io.rois import write_rois
from napari_unet.core.io.tiff import LabelsDtypeWarning, write_labels, write_probabilities
from napari_unet.core.progress import Progress, Stage, run_job

__all__ = [
    "ExportItem",
    "ExportedFile",
    "class_mask",
    "existing_outputs",
    "export_files",
    "export_job",
    "file_stem",
]

ExportKind = Literal["labels", "probabilities", "rois", "measurements"]


@dataclass(frozen=True)
class ExportItem:
    """One file to write.

    Attributes
    ----------
    path : pathlib.Path
        Destination file.
    data : array-like or callable
        Integer labels (``kind="labels"``) or float probabilities; or a
        function without arguments that returns them, called when the file's
        turn comes. A GUI passes a function for lazy (zarr-backed) layers, so
        they are read in the export job and not on the GUI thread.
    kind : {"labels", "probabilities", "rois", "measurements"}
        Written with :func:`~napari_unet.core.io.tiff.write_labels`,
        :func:`~napari_unet.core.io.tiff.write_probabilities`, or, from
        instance labels, as an ImageJ ROI zip
        (:func:`~napari_unet.core.io.rois.write_rois`) or a CSV table of
        :func:`~napari_unet.core.io.measurements.measure_objects`.
    axes : str
        Axis letters of `data`, e.g. ``"ZYX"`` or ``"ZCYX"``.
    scale : tuple of float or None
        Pixel size of each spatial axis (Z, Y, X in `axes`), or None.
    unit : str
        Unit of `scale`.
    intensity : array-like, callable or None
        ``kind="measurements"``: the image whose mean intensity per object is
        measured (shaped like `data`, channels last), or a function returning it.
    """

    path: Path
    data: Any
    kind: ExportKind
    axes: str
    scale: tuple[float, ...] | None = None
    unit: str = "um"
    intensity: Any = None


@dataclass(frozen=True)
class ExportedFile:
    """A file :func:`export_job` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    dtype : numpy.dtype
        The data type stored.
    warning : str or None
        Why the file is not an ImageJ hyperstack (labels above 65535), if so.
    """

    path: Path
    dtype: np.dtype
    warning: str | None = None


def existing_outputs(items: Sequence[ExportItem], /) -> list[Path]:
    """The destinations of `items` that already exist."""
    return [item.path for item in items if item.path.exists()]


def export_job(
    items: Sequence[ExportItem], /, *, overwrite: bool = False
) -> Generator[Progress, None, list[ExportedFile]]:
    """Write `items` one by one, yielding progress before each file.

    Parameters
    ----------
    items : sequence of ExportItem
        The files to write, in order.
    overwrite : bool
        Replace existing files. If False, an existing destination raises
        :class:`~napari_unet.core.io.atomic.OutputError` when its turn comes
        (check :func:`existing_outputs` first to refuse the whole export).

    Yields
    ------
    Progress
        Stage ``"export"``; ``done`` files of ``total`` are written.

    Returns
    -------
    list of ExportedFile
        The files written.

    Raises
    ------
    napari_unet.core.io.atomic.OutputError
        A file could not be written (no permission, full disk, exists). The
        files written before it are complete; nothing of the failed one is
        left behind.

    Notes
    -----
    Labels above 65535 are written as plain 32-bit TIFFs (see
    :func:`~napari_unet.core.io.tiff.write_labels`); the warning is returned
    in :attr:`ExportedFile.warning` instead of being issued, because a GUI
    shows it as a notification.
    """
    written: list[ExportedFile] = []
    total = len(items)
    for done, item in enumerate(items):
        yield Progress(Stage.EXPORT, done=done, total=total, message=f"writing {item.path.name}")
        written.append(_write(item, overwrite=overwrite))
    yield Progress(Stage.EXPORT, done=total, total=total, message=f"{total} file(s) written")
    return written


def export_files(items: Sequence[ExportItem], /, *, overwrite: bool = False) -> list[ExportedFile]:
    """Write `items`; the blocking form of :func:`export_job` for scripts.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> item = ExportItem(folder / "cells_labels.tif", np.eye(8, dtype=int), "labels", "YX", (0.5, 0.5))
    >>> [(f.path.name, str(f.dtype)) for f in export_files([item])]
    [('cells_labels.tif', 'uint8')]
    """
    return run_job(export_job(items, overwrite=overwrite))


def _write(item: ExportItem, *, overwrite: bool) -> ExportedFile:
    data = item.data() if callable(item.data) else item.data
    if item.kind == "probabilities":
        path = write_probabilities(
            item.path, data, axes=item.axes, scale=item.scale, unit=item.unit, overwrite=overwrite
        )
        return ExportedFile(path=path, dtype=np.dtype(np.float32))
    if item.kind in ("rois", "measurements"):
        return _write_objects(item, np.asarray(data), overwrite=overwrite)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelsDtypeWarning)
        result = write_labels(item.path, data, axes=item.axes, scale=item.scale, unit=item.unit, overwrite=overwrite)
    return ExportedFile(path=result.path, dtype=result.dtype, warning=result.warning)


def _write_objects(item: ExportItem, labels: np.ndarray, *, overwrite: bool) -> ExportedFile:
    """The ROI zip or the measurements table of an item (``dtype``: the labels' type)."""
    if item.kind == "rois":
        return ExportedFile(path=write_rois(item.path, labels, axes=item.axes, overwrite=overwrite), dtype=labels.dtype)
    intensity = item.intensity() if callable(item.intensity) else item.intensity
    table = measure_objects(labels, axes=item.axes, intensity=intensity, scale=item.scale, unit=item.unit)
    return ExportedFile(path=write_measurements(item.path, table, overwrite=overwrite), dtype=labels.dtype)


def class_mask(probabilities: Sequence[Any], /) -> np.ndarray:
    """Most probable class per pixel from one probability array per class.

    Parameters
    ----------
    probabilities : sequence of array-like
        One array per class, all of the same shape (e.g. (Z, Y, X)).

    Returns
    -------
    numpy.ndarray
        Class indices (0 = first class, usually background), same shape,
        uint8 (uint16 above 256 classes).

    Examples
    --------
    >>> class_mask([np.array([[0.9, 0.2]]), np.array([[0.1, 0.8]])])
    array([[0, 1]], dtype=uint8)
    """
    if not probabilities:
        raise ValueError("a class mask needs at least one probability array")
    stacked = np.stack([np.asarray(p) for p in probabilities])
    dtype = np.uint8 if stacked.shape[0] <= 256 else np.uint16
    return np.argmax(stacked, axis=0).astype(dtype)


_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')


def file_stem(name: str, /) -> str:
    """A file-name-safe stem from a layer or image name.

    Path separators and characters Windows forbids become ``_``; a known
    image suffix (``.tif``, ``.png``, ...) is dropped.

    Examples
    --------
    >>> file_stem("cells 1/2.tif")
    'cells 1_2'
    """
    stem = _UNSAFE.sub("_", name).strip(" .")
    stem = re.sub(r"\.(ome\.tiff?|tiff?|png|jpe?g|czi|nd2|lif)$", "", stem, flags=re.IGNORECASE)
    return stem or "image"
