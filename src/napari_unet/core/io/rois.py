"""The objects of a label image as an ImageJ ROI Manager ``.zip`` (Fiji: drag it onto the image).

Each object of each plane becomes one polygon ROI: the outline of its largest piece,
traced at half a pixel between the object's pixels and the rest (as Fiji's
*Analyze Particles* outlines are), in ImageJ's pixel coordinates (a pixel's top-left
corner is its integer position). ROIs of a stack carry their Z and T position, so the
ROI Manager shows each on its own plane. Written with :mod:`roifile`.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.io.atomic import atomic_write_bytes

__all__ = ["label_rois", "write_rois"]


def label_rois(labels: Any, /, *, axes: str) -> list[Any]:
    """One polygon ROI per object and plane of ``labels``.

    Parameters
    ----------
    labels : array-like
        Integer labels, 0 = background.
    axes : str
        Axis letters of ``labels``: ``"YX"``, ``"ZYX"``, ``"TYX"`` or ``"TZYX"``.

    Returns
    -------
    list of roifile.ImagejRoi
        Named ``<ID>`` (2-D), ``<ID>-z<Z>``, ``<ID>-t<T>`` or ``<ID>-t<T>-z<Z>``
        (IDs zero-padded, planes from 1 as in Fiji), in ID then plane order.

    Examples
    --------
    >>> labels = np.zeros((8, 8), np.uint8)
    >>> labels[2:5, 1:4] = 7
    >>> (roi,) = label_rois(labels, axes="YX")
    >>> roi.name, roi.coordinates().min(axis=0).tolist(), roi.coordinates().max(axis=0).tolist()
    ('0007', [1.0, 2.0], [4.0, 5.0])
    """
    import roifile

    data = np.asarray(labels)
    if len(axes) != data.ndim or axes[-2:] != "YX":
        raise ValueError(f"axes {axes!r} do not describe labels of shape {data.shape}")
    width = len(str(int(data.max(initial=0))))
    found = []
    for index in np.ndindex(data.shape[:-2]):
        plane = data[index]
        where = dict(zip(axes[:-2], index))
        for label, box in enumerate(ndi.find_objects(plane), start=1):
            if box is None:
                continue
            outline = _outline(plane[box] == label)
            name = "-".join([f"{label:0{max(width, 4)}d}", *(f"{a.lower()}{i + 1}" for a, i in where.items())])
            points = outline + [box[1].start, box[0].start]
            position = {k: where[a] for k, a in (("z", "Z"), ("t", "T")) if a in where}  # roifile counts from 0
            roi = roifile.ImagejRoi.frompoints(points, name=name, c=0 if position else None, **position)
            found.append((label, index, roi))
    return [roi for _, _, roi in sorted(found, key=lambda f: (f[0], f[1]))]


def _outline(mask: np.ndarray) -> np.ndarray:
    """(x, y) vertices of the outline of the largest piece of ``mask``, on pixel corners."""
    from skimage.measure import find_contours

    pieces, n = ndi.label(mask)
    if n > 1:
        mask = pieces == 1 + int(np.argmax(ndi.sum_labels(mask, pieces, range(1, n + 1))))
    padded = np.pad(mask, 1).astype(np.float32)
    contour = max(find_contours(padded, 0.5), key=len)  # the outer one is the longest
    # contour (row, col) in the padded box: -1 for the pad, +0.5 from pixel centres to corners
    return np.round(contour[:, ::-1] - 0.5, 3)


def write_rois(path: str | os.PathLike, labels: Any, /, *, axes: str, overwrite: bool = False) -> Path:
    """Write the objects of ``labels`` as an ImageJ ROI Manager ``.zip``.

    Parameters
    ----------
    path : path-like
        Destination, usually ending in ``.zip``.
    labels : array-like
        Integer labels, 0 = background.
    axes : str
        Axis letters of ``labels`` (see :func:`label_rois`).
    overwrite : bool
        Replace an existing file; if False an existing ``path`` raises
        :class:`~napari_unet.core.io.atomic.OutputError`.

    Returns
    -------
    pathlib.Path
        The file written (atomically: complete or absent).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for roi in label_rois(labels, axes=axes):
            archive.writestr(f"{roi.name}.roi", roi.tobytes())
    atomic_write_bytes(path, buffer.getvalue(), overwrite=overwrite)
    return Path(path)
