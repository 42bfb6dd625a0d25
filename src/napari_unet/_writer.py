"""napari writer: save a Labels layer as a TIFF that Fiji opens (File > Save Layers...).

The writer is thin: it reads the axes, pixel size and unit off the layer with
:mod:`napari_unet.core.io.calibration` (shared with the Export widget) and calls
:func:`napari_unet.core.io.tiff.write_labels` (smallest dtype that fits, ImageJ
hyperstack, atomic write). Nothing here imports Qt.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.core.io.calibration import DEFAULT_UNIT, LabelAxesError, label_axes, spatial_calibration
from napari_unet.core.io.tiff import write_labels

__all__ = ["DEFAULT_UNIT", "LabelAxesError", "label_axes", "spatial_calibration", "write_labels_layer"]


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer as an ImageJ TIFF (napari single-layer writer).

    Parameters
    ----------
    path : str
        Destination, ending in ``.tif`` or ``.tiff``. An existing file is
        replaced: napari's save dialog has already asked.
    data : array-like or list of array-like
        The layer data, (Y, X), (Z, Y, X), (T, Y, X) or (T, Z, Y, X) integer
        labels; of a multiscale layer only the full-resolution level is written.
    meta : dict
        The layer's state (``scale``, ``units``, ``axis_labels``,
        ``multiscale``), as napari passes it.

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    napari_unet.core.io.atomic.OutputError
        The folder is not writable or the disk is full; no file (and no
        partial file) is left at `path`.
    ValueError
        Negative labels.
    LabelAxesError
        A layer with fewer than 2 or more than 4 dimensions (a ``ValueError``).

    Warns
    -----
    napari_unet.core.io.tiff.LabelsDtypeWarning
        More than 65535 labels: the file is a plain 32-bit TIFF (see
        :func:`~napari_unet.core.io.tiff.write_labels`).
    """
    array = np.asarray(data[0] if meta.get("multiscale") else data)
    axes = label_axes(array.ndim, axis_labels=meta.get("axis_labels"), units=meta.get("units"))
    scale, unit = spatial_calibration(meta.get("scale"), meta.get("units"), axes)
    result = write_labels(path, array, axes=axes, scale=scale, unit=unit or DEFAULT_UNIT, overwrite=True)
    return [str(result.path)]
