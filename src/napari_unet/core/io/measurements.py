"""One row per object: size, centroid and mean intensity, as a CSV table (Fiji's *Measure*, per object).

:func:`measure_objects` measures with scikit-image's ``regionprops_table`` over the
spatial axes of each time frame (a Z stack's objects are measured in 3-D: their size is
a volume; objects of a plane-by-plane result sit in one plane each). Where the pixel
size is known, calibrated columns (``area_um2``, ``centroid_x_um``, ...) come beside the
pixel ones. :func:`write_measurements` writes the table as CSV.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.atomic import atomic_write_bytes

__all__ = ["measure_objects", "write_measurements"]


def measure_objects(
    labels: Any,
    /,
    *,
    axes: str,
    intensity: Any = None,
    scale: tuple[float, ...] | None = None,
    unit: str = "um",
) -> dict[str, list[Any]]:
    """Measure every object of ``labels``.

    Parameters
    ----------
    labels : array-like
        Integer labels, 0 = background.
    axes : str
        Axis letters of ``labels``: ``"YX"``, ``"ZYX"``, ``"TYX"`` or ``"TZYX"``.
    intensity : array-like, optional
        The image, shaped like ``labels`` or with one more, last, channel
        axis; adds ``mean_intensity`` (one column per channel:
        ``mean_intensity_c0``, ...).
    scale : tuple of float, optional
        Pixel size of each spatial axis (the Z, Y, X letters of ``axes``),
        in ``unit``; adds the calibrated columns.
    unit : str
        Unit of ``scale``.

    Returns
    -------
    dict of str to list
        Columns: ``label``, ``frame`` (with T), ``pixels``, ``area_<unit>2``
        (or ``volume_<unit>3`` with Z), ``centroid_z|y|x`` (pixels, from 0),
        ``centroid_z|y|x_<unit>``, ``mean_intensity``.

    Examples
    --------
    >>> labels = np.zeros((6, 8), np.uint8)
    >>> labels[1:3, 2:6] = 4
    >>> table = measure_objects(labels, axes="YX", intensity=labels * 10.0, scale=(0.5, 0.5))
    >>> {k: v[0] for k, v in table.items()}
    {'label': 4, 'pixels': 8, 'area_um2': 2.0, 'centroid_y': 1.5, 'centroid_x': 3.5, 'centroid_y_um': 0.75, 'centroid_x_um': 1.75, 'mean_intensity': 40.0}
    """
    data = np.asarray(labels)
    if len(axes) != data.ndim or axes[-2:] != "YX":
        raise ValueError(f"axes {axes!r} do not describe labels of shape {data.shape}")
    image = None if intensity is None else np.asarray(intensity)
    spatial = axes.replace("T", "")
    columns: dict[str, list[Any]] = {}
    frames = range(data.shape[0]) if axes[0] == "T" else [None]
    for frame in frames:
        part = data if frame is None else data[frame]
        values = None if image is None else (image if frame is None else image[frame])
        _measure_frame(part, values, frame, spatial, scale, unit, columns)
    return columns


def _measure_frame(
    labels: np.ndarray,
    image: np.ndarray | None,
    frame: int | None,
    spatial: str,
    scale: tuple[float, ...] | None,
    unit: str,
    columns: dict[str, list[Any]],
) -> None:
    from skimage.measure import regionprops_table

    if image is not None and image.shape[: labels.ndim] != labels.shape:
        raise ValueError(f"the intensity image {image.shape} does not match the labels {labels.shape}")
    properties = ["label", "area", "centroid"] + (["intensity_mean"] if image is not None else [])
    table = regionprops_table(labels.astype(np.int64, copy=False), intensity_image=image, properties=properties)
    n = len(table["label"])
    rows: dict[str, Any] = {"label": table["label"].astype(int)}
    if frame is not None:
        rows["frame"] = np.full(n, frame)
    rows["pixels"] = table["area"].astype(int)
    if scale is not None:
        size = float(np.prod(scale))
        rows[f"{'volume' if 'Z' in spatial else 'area'}_{unit}{len(spatial)}"] = table["area"] * size
    for i, axis in enumerate(spatial):
        rows[f"centroid_{axis.lower()}"] = table[f"centroid-{i}"]
    if scale is not None:
        for i, axis in enumerate(spatial):
            rows[f"centroid_{axis.lower()}_{unit}"] = table[f"centroid-{i}"] * scale[i]
    means = sorted(k for k in table if k.startswith("intensity_mean"))
    for key in means:
        rows["mean_intensity" if len(means) == 1 else f"mean_intensity_c{key.rsplit('-', 1)[-1]}"] = table[key]
    for key, values in rows.items():
        columns.setdefault(key, []).extend(np.asarray(values).tolist())


def write_measurements(path: str | os.PathLike, table: dict[str, list[Any]], /, *, overwrite: bool = False) -> Path:
    """Write a table of :func:`measure_objects` as CSV (one header row, one row per object).

    Parameters
    ----------
    path : path-like
        Destination, usually ending in ``.csv``.
    table : dict of str to list
        Columns of equal length.
    overwrite : bool
        Replace an existing file; if False an existing ``path`` raises
        :class:`~napari_unet.core.io.atomic.OutputError`.

    Returns
    -------
    pathlib.Path
        The file written (atomically).
    """
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table)
    writer.writerows(zip(*table.values()))
    atomic_write_bytes(path, text.getvalue().encode("utf-8"), overwrite=overwrite)
    return Path(path)
