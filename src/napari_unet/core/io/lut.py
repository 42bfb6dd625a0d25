"""A glasbey-like lookup table for label images, as ImageJ embeds it in a TIFF.

Fiji shows a label TIFF in grays unless the file carries a lookup table (LUT): objects
with neighbouring IDs then look alike. :func:`glasbey_lut` makes 256 colours that are
far apart from each other (greedily, in CIELAB, as Glasbey et al. 2007 do), with black
for the background (0); :func:`imagej_lut_metadata` is what
``tifffile.imwrite(..., imagej=True, metadata=...)`` needs to embed it, stored as ImageJ
does (the ``luts`` entry of the IJMetadata tag, 768 bytes) so Fiji opens the file in
those colours.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["glasbey_lut", "imagej_lut_metadata"]


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours in 0..255, shape (n, 3)."""
    c = rgb / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


@functools.cache
def _glasbey_colours() -> np.ndarray:
    levels = np.linspace(0, 255, 16)
    candidates = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = _lab(candidates)
    lab_ok = lab[:, 0] >= 35  # not too dark: objects stay visible on the black background
    candidates, lab = candidates[lab_ok], lab[lab_ok]
    chosen = [int(np.argmax(lab[:, 0]))]  # the brightest first, then always the farthest from all chosen
    distance = np.linalg.norm(lab - lab[chosen[0]], axis=1)
    for _ in range(254):
        pick = int(np.argmax(distance))
        chosen.append(pick)
        distance = np.minimum(distance, np.linalg.norm(lab - lab[pick], axis=1))
    lut = np.zeros((3, 256), np.uint8)
    lut[:, 1:] = np.round(candidates[chosen]).astype(np.uint8).T
    lut.setflags(write=False)
    return lut


def glasbey_lut() -> np.ndarray:
    """A 256-entry lookup table: black for 0, then 255 colours far apart from each other.

    Returns
    -------
    numpy.ndarray
        uint8, shape (3, 256): red, green and blue of each entry (ImageJ's layout).

    Examples
    --------
    >>> lut = glasbey_lut()
    >>> lut.shape, lut.dtype.name, lut[:, 0].tolist()
    ((3, 256), 'uint8', [0, 0, 0])
    >>> len({tuple(c) for c in lut.T})  # all different
    256
    """
    return _glasbey_colours().copy()


def imagej_lut_metadata(max_label: int, /) -> dict[str, Any]:
    """ImageJ metadata that shows labels 0..``max_label`` in :func:`glasbey_lut`'s colours.

    ImageJ maps a pixel to a LUT entry through the display range: with ``min`` 0
    and ``max`` 255, label k has entry k (exact for up to 255 objects; IDs above
    255 show the last colour). With more than 255 objects the range is 0 to
    ``max_label``, so every object is coloured but neighbouring IDs may share a
    colour, as with Fiji's own glasbey LUT on 16-bit labels.

    Parameters
    ----------
    max_label : int
        The largest label in the image.

    Returns
    -------
    dict
        ``LUTs`` (one table), ``min``, ``max`` and ``mode`` (``"color"``: the
        channel is shown through its LUT), for tifffile's ImageJ ``metadata``.

    Examples
    --------
    >>> meta = imagej_lut_metadata(40)
    >>> meta["min"], meta["max"], meta["LUTs"][0].shape
    (0.0, 255.0, (3, 256))
    """
    return {"LUTs": [glasbey_lut()], "min": 0.0, "max": float(max(255, int(max_label))), "mode": "color"}
