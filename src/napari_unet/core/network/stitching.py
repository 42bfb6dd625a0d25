"""Link the objects of neighbouring planes into one ID, by overlap (Cellpose's ``stitch_threshold``).

A 2-D model labels every plane of a Z stack on its own, so a nucleus seen in five planes
has five IDs. :func:`stitch_planes` walks the planes in order: an object of plane z+1
takes the ID of the object of plane z it overlaps best, when their intersection over
union (IoU) is at least ``threshold`` and that object of plane z is not a better match
for another object of plane z+1 (each ID continues into at most one object per plane);
any other object starts a new ID.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.errors import UserError
from napari_unet.core.network.instances import smallest_label_dtype

__all__ = ["StitchError", "check_stitching", "stitch_planes"]


class StitchError(UserError, ValueError):
    """A stitching threshold or axis that cannot be used."""


def stitch_planes(labels: np.ndarray, /, *, threshold: float, axis: int = -1) -> np.ndarray:
    """Give objects that overlap across neighbouring planes of ``axis`` one ID.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer labels, 0 = background, with the planes along ``axis`` and the
        plane's (Y, X) as the last two axes; other leading axes (e.g. T of a
        TZYX stack) are stitched independently. IDs may repeat between
        planes or not: each plane's objects are taken as they are.
    threshold : float
        Smallest IoU, in (0, 1], for an object to continue the one before it.
    axis : int
        The stack axis to stitch along (negative counts from the end of the
        stack axes; default -1: the one just before Y, Z of a TZYX stack).

    Returns
    -------
    numpy.ndarray
        Labels of the same shape, IDs 1..n unique over the whole array
        (n: objects after stitching), in the smallest unsigned dtype that fits.

    Raises
    ------
    StitchError
        ``threshold`` is outside (0, 1], or ``labels`` has no such stack axis.

    Examples
    --------
    >>> z = np.zeros((3, 4, 6), np.uint8)
    >>> z[0, :, :3] = 1; z[1, :, :2] = 2; z[2, :, 4:] = 3  # one object in planes 0-1, another in plane 2
    >>> stitch_planes(z, threshold=0.5)[:, 0]
    array([[1, 1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0, 0],
           [0, 0, 0, 0, 2, 2]], dtype=uint8)
    """
    labels = np.asarray(labels)
    n_stack = labels.ndim - 2
    check_stitching(threshold, axis=axis, stack_shape=labels.shape[:-2])
    chains = np.moveaxis(labels, axis % n_stack, n_stack - 1)  # (..., Z, Y, X)
    out = np.zeros(chains.shape, np.int64)
    next_id = 1
    for index in np.ndindex(chains.shape[:-3]):
        next_id = _stitch_chain(chains[index], out[index], next_id, threshold)
    return np.moveaxis(out, n_stack - 1, axis % n_stack).astype(smallest_label_dtype(next_id - 1))


def check_stitching(threshold: float, /, *, axis: int, stack_shape: tuple[int, ...]) -> None:
    """Refuse a threshold outside (0, 1] or an ``axis`` that ``stack_shape`` does not have.

    Raises
    ------
    StitchError
        With what to change.
    """
    if not 0 < threshold <= 1:
        raise StitchError(f"the stitching threshold is an IoU between 0 and 1 (e.g. 0.25), got {threshold}")
    n_stack = len(stack_shape)
    if not -n_stack <= axis < n_stack:
        which = "no stack axis (it is a single plane)" if not n_stack else f"{n_stack} stack axes, not axis {axis}"
        raise StitchError(f"stitching links objects across planes, but this image has {which}")


def _stitch_chain(planes: np.ndarray, out: np.ndarray, next_id: int, threshold: float) -> int:
    """Stitch a (Z, Y, X) chain into ``out``, IDs from ``next_id``; returns the next free ID."""
    previous: np.ndarray | None = None
    for z in range(planes.shape[0]):
        plane = planes[z]
        ids = np.unique(plane[plane > 0])
        new_ids = np.arange(next_id, next_id + len(ids), dtype=np.int64)
        if previous is not None and len(ids):
            matched = _matches(plane, previous, ids, threshold)
            new_ids = np.where(matched > 0, matched, 0)
            fresh = new_ids == 0
            new_ids[fresh] = np.arange(next_id, next_id + int(fresh.sum()))
        next_id += int((new_ids >= next_id).sum())
        lookup = np.zeros(int(ids.max(initial=0)) + 1, np.int64)
        lookup[ids] = new_ids
        out[z] = lookup[plane]
        previous = out[z]
    return next_id


def _matches(plane: np.ndarray, previous: np.ndarray, ids: np.ndarray, threshold: float) -> np.ndarray:
    """For each of ``ids`` in ``plane``, the ID of ``previous`` it continues (0: none)."""
    both = (plane > 0) & (previous > 0)
    pairs, overlap = np.unique(np.stack([plane[both], previous[both]]), axis=1, return_counts=True)
    matched = np.zeros(len(ids), np.int64)
    if not pairs.size:
        return matched
    new_area = dict(zip(*np.unique(plane[plane > 0], return_counts=True)))
    old_area = dict(zip(*np.unique(previous[previous > 0], return_counts=True)))
    iou = np.array(
        [n / (new_area[a] + old_area[b] - n) for a, b, n in zip(pairs[0], pairs[1], overlap)], dtype=np.float64
    )
    keep = iou >= threshold
    # best first: each new object takes its best old one, each old one goes to its best new one
    position = {int(a): i for i, a in enumerate(ids)}
    taken: set[int] = set()
    for k in np.argsort(-iou[keep], kind="stable"):
        a, b = int(pairs[0][keep][k]), int(pairs[1][keep][k])
        if matched[position[a]] == 0 and b not in taken:
            matched[position[a]] = b
            taken.add(b)
    return matched
