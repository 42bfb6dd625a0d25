"""Measuring the objects' diameter on the canvas: from a Labels layer's objects or lines drawn across them.

Qt-free: the Segment widget's *Measure* button calls :func:`diameter_from_layer`
with the selected layer. Only the plane shown in the viewer is measured, so the
measurement stays quick (well under 100 ms for planes of a few thousand pixels
on a side) on the GUI thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.core.errors import UserError
from napari_unet.core.network.object_size import median_diameter

__all__ = ["MeasureError", "diameter_from_layer", "shown_stack_index"]

#: Layer types that can be measured, for messages.
_HOW = (
    "select a Labels layer holding a few objects (for example a corrected result), or a Shapes layer "
    "with lines drawn across a few objects, then press Measure"
)


class MeasureError(UserError, ValueError):
    """Nothing to measure in the selected layer; the message says what to select."""


def shown_stack_index(viewer: Any, layer: Any, /) -> tuple[int, ...]:
    """The index, along every axis but the last two, of the plane of ``layer`` shown in ``viewer``."""
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    shape = layer.data.shape if hasattr(layer.data, "shape") else ()
    return tuple(int(np.clip(np.round(point[a]), 0, shape[a] - 1)) for a in range(len(shape) - 2))


def diameter_from_layer(layer: Any, /, *, plane: tuple[int, ...] = ()) -> tuple[float, str]:
    """The objects' diameter in pixels measured on ``layer``, and a sentence saying how.

    Parameters
    ----------
    layer : napari.layers.Labels or napari.layers.Shapes
        Labels: the median equivalent diameter of its objects in the shown
        plane. Shapes: the median length of its lines and paths (one drawn
        across each object), in data pixels of the last two axes.
    plane : tuple of int
        The stack index of the shown plane (Labels layers with stack axes).

    Raises
    ------
    MeasureError
        The layer is of another type, holds no objects, or no lines.
    """
    kind = type(layer).__name__
    if kind == "Labels":
        data = np.asarray(layer.data[tuple(plane)] if plane else layer.data)
        if data.ndim != 2:
            raise MeasureError(f"the Labels layer {layer.name!r} has {data.ndim} dimensions in the shown plane; {_HOW}")
        diameter = median_diameter(data.astype(np.int64, copy=False))
        if diameter is None:
            raise MeasureError(f"the Labels layer {layer.name!r} holds no objects in this plane; {_HOW}")
        count = int(np.count_nonzero(np.bincount(data.ravel().astype(np.int64))[1:]))
        return diameter, f"median of {count} objects of {layer.name!r}"
    if kind == "Shapes":
        lengths = [
            _length(np.asarray(points)[:, -2:])
            for points, shape_type in zip(layer.data, layer.shape_type)
            if shape_type in ("line", "path")
        ]
        lengths = [n for n in lengths if n > 0]
        if not lengths:
            raise MeasureError(f"the Shapes layer {layer.name!r} has no lines; {_HOW}")
        return float(np.median(lengths)), f"median of {len(lengths)} lines of {layer.name!r}"
    raise MeasureError(f"{layer.name!r} is a {kind} layer; {_HOW}")


def _length(points: np.ndarray) -> float:
    return float(np.sum(np.linalg.norm(np.diff(points, axis=0), axis=1)))
