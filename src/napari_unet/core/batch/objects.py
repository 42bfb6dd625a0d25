"""What a batch does with the objects of each file: link them across Z, and write them for Fiji.

:class:`ObjectOptions` is one keyword of :func:`~napari_unet.core.batch.files.segment_files`
(``napari-unet segment --stitch-threshold --rois --measurements``): stitching is passed to
the segment job (along the file's Z axis, or T when asked), and :func:`write_object_files`
writes, beside each labels TIFF ``NAME.tif``, ``NAME_rois.zip`` (ImageJ ROI Manager) and
``NAME_measurements.csv`` with the writers of :mod:`napari_unet.core.io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.export import file_stem
from napari_unet.core.io.measurements import measure_objects, write_measurements
from napari_unet.core.io.rois import write_rois
from napari_unet.core.network.stitching import StitchError

__all__ = ["ObjectOptions", "companion_path", "object_file_paths", "write_object_files"]


@dataclass(frozen=True)
class ObjectOptions:
    """Stitching and Fiji outputs of a batch of instance segmentations.

    Attributes
    ----------
    stitch_threshold : float or None
        Link objects of neighbouring planes whose IoU is at least this
        (:func:`~napari_unet.core.network.stitching.stitch_planes`); None: no linking.
    stitch_axis : {"Z", "T"}
        The file's axis to link along: Z (default) or, when asked, the frames of a time-lapse.
    rois : bool
        Write ``NAME_rois.zip`` beside each labels file.
    measurements : bool
        Write ``NAME_measurements.csv`` beside each labels file.
    """

    stitch_threshold: float | None = None
    stitch_axis: str = "Z"
    rois: bool = False
    measurements: bool = False

    def segment_keywords(self, axes: str, /, *, file: str) -> dict[str, Any]:
        """The stitching keywords of :func:`~napari_unet.core.segment_job` for a file with ``axes``.

        Raises
        ------
        StitchError
            Stitching asked for along an axis the file does not have.
        """
        if self.stitch_threshold is None:
            return {}
        stack = axes[:-2]
        if self.stitch_axis not in stack:
            other = {"Z": "T", "T": "Z"}.get(self.stitch_axis, "Z")
            hint = f"; --stitch-axis {other} links its {other} planes" if other in stack else ""
            raise StitchError(
                f"{file} has no {self.stitch_axis} axis to link objects along (its axes are {axes}){hint}"
            )
        return {"stitch_threshold": self.stitch_threshold, "stitch_axis": stack.index(self.stitch_axis)}


def companion_path(labels_path: Path, suffix: str, /) -> Path:
    """``NAME<suffix>`` beside ``NAME.tif``, e.g. ``companion_path(Path("a.tif"), "_rois.zip")``."""
    return labels_path.with_name(file_stem(labels_path.name) + suffix)


def object_file_paths(target: Path, options: ObjectOptions, /) -> list[Path]:
    """The files :func:`write_object_files` writes beside ``target`` for ``options``."""
    wanted = [("_rois.zip", options.rois), ("_measurements.csv", options.measurements)]
    return [companion_path(target, suffix) for suffix, on in wanted if on]


def write_object_files(
    target: Path,
    labels: np.ndarray,
    /,
    *,
    options: ObjectOptions,
    axes: str,
    image: Any = None,
    scale: tuple[float, ...] | None = None,
    unit: str = "um",
    overwrite: bool = False,
) -> list[Path]:
    """Write the ROI zip and the measurements table that ``options`` ask for, beside ``target``.

    Parameters
    ----------
    target : pathlib.Path
        The labels TIFF they belong to.
    labels : numpy.ndarray
        Its labels, with ``axes`` (``"YX"``, ``"ZYX"``, ``"TYX"``, ``"TZYX"``).
    options : ObjectOptions
        Which files.
    image : array-like, optional
        Intensities for the measurements: shaped like ``labels``, channels last.
    scale, unit
        Pixel size of the spatial axes, for calibrated measurements.
    overwrite : bool
        Replace existing files (else :class:`~napari_unet.core.io.atomic.OutputError`).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    written = []
    if options.rois:
        written.append(write_rois(companion_path(target, "_rois.zip"), labels, axes=axes, overwrite=overwrite))
    if options.measurements:
        table = measure_objects(labels, axes=axes, intensity=image, scale=scale, unit=unit)
        path = companion_path(target, "_measurements.csv")
        written.append(write_measurements(path, table, overwrite=overwrite))
    return written
