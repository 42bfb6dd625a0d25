"""Axes and calibration of napari layers: time or Z, pixel sizes in one length unit.

napari describes a layer's axes with ``axis_labels``, ``units`` (pint units or strings)
and ``scale``; TIFF files and OME-Zarr need axis letters (``"TYX"`` or ``"ZYX"``) and one
pixel size per spatial axis in a single unit. These rules are used by the napari writer,
the Export widget and the result layers, so a layer is read the same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from napari_unet.core.errors import UserError

__all__ = ["DEFAULT_UNIT", "LabelAxesError", "label_axes", "spatial_calibration"]


class LabelAxesError(UserError, ValueError):
    """A labels layer whose dimensions cannot be saved as a TIFF (only 2-D to 4-D can)."""


#: Short names of the length units napari (pint) spells out.
_SHORT_UNITS = {
    "nanometer": "nm",
    "micrometer": "um",
    "micron": "um",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "angstrom": "A",
}
_PIXEL = {"pixel", "pixels", "px", ""}
_TIME_LABELS = {"t", "time", "frame", "frames"}
#: Unit assumed for a scale given in napari's default unit ("pixel").
DEFAULT_UNIT = "um"


def label_axes(ndim: int, /, *, axis_labels: Sequence[str] | None = None, units: Sequence[Any] | None = None) -> str:
    """TIFF axes of a labels layer with `ndim` dimensions.

    Parameters
    ----------
    ndim : int
        2, 3 or 4.
    axis_labels, units : sequence, optional
        The layer's ``axis_labels`` and ``units``: a 3-D layer is a time
        series (``"TYX"``) when its first axis is labelled ``t``/``time`` or
        has a time unit, else a Z stack (``"ZYX"``).

    Returns
    -------
    str
        ``"YX"``, ``"ZYX"``, ``"TYX"`` or ``"TZYX"``.

    Raises
    ------
    LabelAxesError
        `ndim` is not 2, 3 or 4.

    Examples
    --------
    >>> label_axes(3, axis_labels=("t", "y", "x"))
    'TYX'
    >>> label_axes(3)
    'ZYX'
    """
    if ndim == 2:
        return "YX"
    if ndim == 4:
        return "TZYX"
    if ndim != 3:
        raise LabelAxesError(f"labels must be 2-D, 3-D or 4-D to be saved as TIFF, got {ndim} dimensions")
    first_label = str(axis_labels[0]).strip().lower() if axis_labels else ""
    first_unit = units[0] if units else None
    return "TYX" if first_label in _TIME_LABELS or _is_time(first_unit) else "ZYX"


def spatial_calibration(
    scale: Sequence[float] | None, units: Sequence[Any] | None, axes: str, /
) -> tuple[tuple[float, ...] | None, str | None]:
    """Pixel size of the spatial axes of a layer, in one length unit.

    Parameters
    ----------
    scale : sequence of float or None
        The layer's ``scale``, one value per axis of `axes` (or only the
        spatial ones).
    units : sequence or None
        The layer's ``units`` (pint units or strings), aligned with `scale`.
    axes : str
        Letters of the layer's axes, e.g. ``"TYX"``.

    Returns
    -------
    scale : tuple of float or None
        One pixel size per ``Z``, ``Y``, ``X`` letter of `axes`; None when
        the layer is uncalibrated (unit "pixel" and scale 1 everywhere).
    unit : str or None
        Short unit name (``"um"``, ``"nm"``, ...) or None.

    Notes
    -----
    napari's default unit is "pixel"; a scale other than 1 in pixels is
    taken to be in micrometres (what microscopy users almost always mean).
    Spatial axes in different length units (Z in um, YX in nm) are converted
    to the unit of the X axis.

    Examples
    --------
    >>> spatial_calibration((2.0, 0.5, 0.5), ("micrometer", "nanometer", "nanometer"), "ZYX")
    ((2000.0, 0.5, 0.5), 'nm')
    >>> spatial_calibration((1.0, 1.0), None, "YX")
    (None, None)
    """
    if scale is None:
        return None, None
    values = [float(v) for v in scale]
    unit_list = list(units) if units is not None else ["pixel"] * len(values)
    if len(values) == len(axes):
        keep = [i for i, a in enumerate(axes) if a in "ZYX"]
        values = [values[i] for i in keep]
        unit_list = [unit_list[i] for i in keep] if len(unit_list) == len(axes) else unit_list[-len(keep) :]
    else:
        unit_list = unit_list[-len(values) :]
    names = [_unit_name(u) for u in unit_list]
    if all(n in _PIXEL for n in names):
        if all(math.isclose(v, 1.0) for v in values):
            return None, None
        return tuple(values), DEFAULT_UNIT
    target = unit_list[-1] if names[-1] not in _PIXEL else next(u for u, n in zip(unit_list, names) if n not in _PIXEL)
    converted = tuple(_convert(v, u, target) for v, u in zip(values, unit_list))
    target_name = _unit_name(target)
    return converted, _SHORT_UNITS.get(target_name, target_name)


def _unit_name(unit: Any) -> str:
    return "pixel" if unit is None else str(unit).strip().lower()


def _convert(value: float, unit: Any, target: Any) -> float:
    """``value`` in `unit` expressed in `target` (pixels count as `target`)."""
    if _unit_name(unit) in _PIXEL or _unit_name(unit) == _unit_name(target):
        return value
    import pint

    registry = pint.get_application_registry()
    quantity = registry.Quantity(value, str(unit))
    return float(f"{quantity.to(str(target)).magnitude:.12g}")


def _is_time(unit: Any) -> bool:
    if unit is None or _unit_name(unit) in _PIXEL:
        return False
    try:
        import pint

        return pint.get_application_registry().Unit(str(unit)).dimensionality == {"[time]": 1}
    except Exception:  # an unknown unit name: not a time
        return False
