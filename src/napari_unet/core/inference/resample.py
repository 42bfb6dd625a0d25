"""Resampling a plane to the model's object size, and its results back to the image's grid.

Images are enlarged by bicubic interpolation and shrunk linearly with
anti-aliasing, class probabilities resampled linearly, labels by nearest
neighbour (every object keeps its ID and no new IDs appear). Bicubic
enlarging keeps more of the contrast of small objects than bilinear, which
blurs them: on the 67 grayscale DSB 2018 val images shrunk to 0.5x, the
nuclei model enlarged x2 by bicubic reaches AP@0.5 0.757 against 0.744
(``docs/performance.md``, "Object size"). All three use the same pixel-centre convention
(``align_corners=False``): pixel ``i`` of ``n`` sits at ``(i + 0.5) / n`` of
the extent on both grids, so a result mapped back lies where it was found.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["resample_image", "resample_labels", "resample_probabilities", "scaled_shape"]


def scaled_shape(shape: tuple[int, int], factor: float, /) -> tuple[int, int]:
    """The (Y, X) size of a plane of ``shape`` resampled by ``factor`` (at least one pixel).

    Examples
    --------
    >>> scaled_shape((100, 31), 0.5), scaled_shape((3, 3), 0.1)
    ((50, 16), (1, 1))
    """
    return (max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor)))


def resample_image(image: np.ndarray, shape: tuple[int, int], /) -> np.ndarray:
    """A (Y, X, C) image resampled to ``shape`` (Y', X'): bicubic when it grows, bilinear anti-aliased when it shrinks.

    Bicubic values may overshoot the input's range a little next to sharp
    edges (as in Fiji's bicubic scaling); they are not clipped.

    Parameters
    ----------
    image : numpy.ndarray
        (Y, X, C), any real dtype; NaN stays NaN where it is read.
    shape : tuple of int
        The new (Y', X').

    Returns
    -------
    numpy.ndarray
        (Y', X', C) float32.

    Examples
    --------
    >>> image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    >>> resample_image(image, (8, 8)).shape, round(float(resample_image(image, (2, 2)).mean()), 3)
    ((8, 8, 1), 7.5)
    """
    if tuple(image.shape[:2]) == tuple(shape):
        return np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    shrinks = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    if shrinks:
        out = F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    else:
        out = F.interpolate(tensor, size=tuple(shape), mode="bicubic", align_corners=False)
    return out[0].permute(1, 2, 0).contiguous().numpy()


def resample_probabilities(probabilities: np.ndarray, shape: tuple[int, int], /) -> np.ndarray:
    """(K, Y, X) class probabilities resampled to ``shape`` (Y', X'), bilinear; they still sum to 1.

    Examples
    --------
    >>> p = np.stack([np.eye(4, dtype=np.float32), 1 - np.eye(4, dtype=np.float32)])
    >>> q = resample_probabilities(p, (8, 8))
    >>> q.shape, bool(np.allclose(q.sum(axis=0), 1))
    ((2, 8, 8), True)
    """
    if tuple(probabilities.shape[1:]) == tuple(shape):
        return probabilities
    tensor = torch.from_numpy(np.ascontiguousarray(probabilities, dtype=np.float32))[None]
    shrinks = shape[0] < probabilities.shape[1] or shape[1] < probabilities.shape[2]
    out = F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False, antialias=shrinks)
    return out[0].numpy()


def resample_labels(labels: np.ndarray, shape: tuple[int, int], /) -> np.ndarray:
    """(Y, X) labels resampled to ``shape`` (Y', X') by nearest neighbour, same dtype and IDs.

    Examples
    --------
    >>> labels = np.array([[0, 1], [2, 2]], np.uint16)
    >>> resample_labels(labels, (4, 4))
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, 2, 2],
           [2, 2, 2, 2]], dtype=uint16)
    """
    rows = _nearest(labels.shape[0], shape[0])
    cols = _nearest(labels.shape[1], shape[1])
    return labels[rows[:, None], cols[None, :]]


def _nearest(old: int, new: int) -> np.ndarray:
    """For each of ``new`` pixel centres, the index of the ``old`` pixel it falls in."""
    centres = (np.arange(new) + 0.5) * (old / new)
    return np.minimum(centres.astype(np.int64), old - 1)
