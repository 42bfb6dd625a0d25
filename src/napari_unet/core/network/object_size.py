"""The size of objects in a label image, as one number: the median equivalent diameter.

A model is trained at one object size; the same size measured on a user's
image says how much to resample the image before the network sees it
(:mod:`napari_unet.core.inference.object_scale`). The measure is the one
Cellpose calls the diameter: the diameter of the disc with an object's area,
``sqrt(4 * area / pi)``, whose median over the objects is robust to a few
fragments or merges.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["equivalent_diameters", "median_diameter"]


def equivalent_diameters(labels: np.ndarray, /, *, exclude_border: bool = False) -> np.ndarray:
    """Equivalent diameter of every object of a label image, in pixels.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, 0 = background, any number of dimensions (the areas
        of a stack's planes are summed per ID: pass one plane at a time for
        per-plane sizes).
    exclude_border : bool
        Leave out objects that touch the array's edge (their visible part is
        smaller than the object).

    Returns
    -------
    numpy.ndarray
        float64, one value per object present, in increasing ID order.

    Examples
    --------
    >>> labels = np.zeros((20, 20), int)
    >>> labels[2:12, 2:12] = 1
    >>> labels[15:20, 15:20] = 2
    >>> np.round(equivalent_diameters(labels), 2)
    array([11.28,  5.64])
    >>> np.round(equivalent_diameters(labels, exclude_border=True), 2)
    array([11.28])
    """
    flat = np.asarray(labels)
    if flat.dtype.kind not in "biu":
        raise TypeError(f"labels must be integers, got {flat.dtype}")
    areas = np.bincount(flat.ravel().astype(np.int64, copy=False))
    areas[:1] = 0
    if exclude_border and flat.ndim >= 1:
        areas[_border_ids(flat)] = 0
    present = areas[areas > 0].astype(np.float64)
    return np.sqrt(4.0 * present / math.pi)


def median_diameter(labels: np.ndarray, /, *, exclude_border: bool = False) -> float | None:
    """Median equivalent diameter of the objects of a label image; None without objects.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, 0 = background.
    exclude_border : bool
        Leave out objects that touch the edge, unless every object does.

    Returns
    -------
    float or None

    Examples
    --------
    >>> labels = np.zeros((30, 30), int)
    >>> labels[1:5, 1:5], labels[10:20, 10:20], labels[22:28, 22:28] = 1, 2, 3
    >>> round(median_diameter(labels), 2)
    6.77
    >>> median_diameter(np.zeros((5, 5), int)) is None
    True
    """
    diameters = equivalent_diameters(labels, exclude_border=exclude_border)
    if exclude_border and diameters.size == 0:
        diameters = equivalent_diameters(labels)
    if diameters.size == 0:
        return None
    return float(np.median(diameters))


def _border_ids(labels: np.ndarray) -> np.ndarray:
    edges = [labels.take(0, axis=a).ravel() for a in range(labels.ndim)]
    edges += [labels.take(-1, axis=a).ravel() for a in range(labels.ndim)]
    ids = np.unique(np.concatenate(edges))
    return ids[ids > 0].astype(np.int64)
