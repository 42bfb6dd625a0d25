"""Per-pixel loss weights: class balance and the U-Net border weight map.

Ronneberger, Fischer & Brox (2015), eq. 2::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

``w_c`` balances class frequencies; the second term makes the thin background
gaps between touching objects expensive to get wrong, so the network learns to
keep the objects apart.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

#: Border-term values below this are dropped (set to exactly 0). This sets how
#: far from each object distances are computed, and so the cost.
_NEGLIGIBLE = 1e-4


def class_balance_weights(labels: np.ndarray, /, *, ignore_mask: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel weights that give every class present the same total weight.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer class image of any shape. Negative values mark unannotated
        pixels.
    ignore_mask : numpy.ndarray of bool, optional
        Same shape as ``labels``; True marks further unannotated pixels.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``labels``. Annotated pixels of class ``c``
        get ``n / (k * n_c)`` where ``n`` is the number of annotated pixels,
        ``n_c`` those of class ``c`` and ``k`` the number of classes present;
        unannotated pixels get 0. All zeros if nothing is annotated.

    Notes
    -----
    Inverse class frequency, normalised so that the mean weight over the
    annotated pixels is exactly 1: the overall scale of a loss that uses the
    weights does not depend on how unbalanced the annotation is. Only the
    classes that occur among the annotated pixels count.

    Examples
    --------
    >>> import numpy as np
    >>> class_balance_weights(np.array([0, 0, 0, 1]))
    array([0.6666667, 0.6666667, 0.6666667, 2.       ], dtype=float32)
    >>> class_balance_weights(np.array([0, 1, -1]))
    array([1., 1., 0.], dtype=float32)
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    annotated = _annotated(labels, ignore_mask)
    weights = np.zeros(labels.shape, dtype=np.float32)
    values = labels[annotated]
    if values.size == 0:
        return weights
    classes, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    per_class = values.size / (len(classes) * counts.astype(np.float64))
    weights[annotated] = per_class[inverse.ravel()]
    return weights


def unet_weight_map(
    instances: np.ndarray,
    /,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: np.ndarray | None = None,
    ignore_mask: np.ndarray | None = None,
) -> np.ndarray:
    """The U-Net weight map: class balance plus a border term between objects.

    Parameters
    ----------
    instances : numpy.ndarray
        Integer instance image, usually (Y, X): 0 is background, every
        positive value is one object (IDs need not be consecutive; pixels of
        one ID need not be connected). Negative values mark unannotated
        pixels.
    w0 : float
        Height of the border term (the paper uses 10).
    sigma : float
        Width of the border term in pixels (the paper uses about 5).
    class_weights : numpy.ndarray, optional
        Per-pixel ``w_c``, same shape as ``instances``. By default
        :func:`class_balance_weights` of foreground (``instances > 0``)
        against background.
    ignore_mask : numpy.ndarray of bool, optional
        Same shape as ``instances``; True marks unannotated pixels.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``instances``; 0 at unannotated pixels.

    Notes
    -----
    ``d1`` and ``d2`` are the Euclidean distances (in pixels, to pixel
    centres) from a pixel to the nearest and the second-nearest object; a
    background pixel touching an object has distance 1. The border term is
    added on background pixels only (object pixels keep ``w_c``) and is 0
    when there are fewer than two objects.

    Distances are computed object by object with
    :func:`scipy.ndimage.distance_transform_edt`, each within the object's
    bounding box grown by ``D = sigma * sqrt(2 * ln(w0 / 1e-4))``: a pixel
    farther than ``D`` from its second-nearest object has a border term
    below 1e-4, which is set to exactly 0. The cost therefore grows with the
    number and size of the objects, not with (number of objects x image
    size).

    Examples
    --------
    >>> import numpy as np
    >>> instances = np.zeros((3, 5), dtype=int)
    >>> instances[:, :2] = 1; instances[:, 3:] = 2  # a one-pixel gap
    >>> w = unet_weight_map(instances, w0=10, sigma=5)
    >>> bool(np.isclose(w[1, 2], 15 / (2 * 3) + 10 * np.exp(-4 / 50)))
    True
    """
    instances = np.asarray(instances)
    if not (np.issubdtype(instances.dtype, np.integer) or instances.dtype == bool):
        raise TypeError(f"instances must be an integer array, got dtype {instances.dtype}")
    if not w0 >= 0:
        raise ValueError(f"w0 must be >= 0, got {w0}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    annotated = _annotated(instances, ignore_mask)
    if class_weights is None:
        weights = class_balance_weights((instances > 0).astype(np.int8), ignore_mask=~annotated)
    else:
        class_weights = np.asarray(class_weights)
        if class_weights.shape != instances.shape:
            raise ValueError(f"class_weights has shape {class_weights.shape}, instances have shape {instances.shape}")
        weights = class_weights.astype(np.float32, copy=True)
    if w0 > 0:
        background = annotated & (instances == 0)
        d1, d2 = _two_nearest_distances(instances, cutoff=sigma * math.sqrt(2 * math.log(w0 / _NEGLIGIBLE)))
        near = background & np.isfinite(d2)
        d = d1[near] + d2[near]
        weights[near] += (w0 * np.exp(-(d * d) / (2.0 * sigma * sigma))).astype(np.float32)
    weights[~annotated] = 0
    return weights


def _annotated(labels: np.ndarray, ignore_mask: np.ndarray | None) -> np.ndarray:
    """Boolean mask of annotated pixels: not negative and not in ``ignore_mask``."""
    annotated = labels >= 0 if labels.dtype != bool else np.ones(labels.shape, dtype=bool)
    if ignore_mask is not None:
        ignore_mask = np.asarray(ignore_mask, dtype=bool)
        if ignore_mask.shape != labels.shape:
            raise ValueError(f"ignore_mask has shape {ignore_mask.shape}, labels have shape {labels.shape}")
        annotated &= ~ignore_mask
    return annotated


def _two_nearest_distances(instances: np.ndarray, *, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest object, ``inf`` beyond ``cutoff``.

    Exact wherever the true distance is at most ``cutoff``.
    """
    d1 = np.full(instances.shape, np.inf, dtype=np.float32)
    d2 = np.full(instances.shape, np.inf, dtype=np.float32)
    if cutoff <= 0:
        return d1, d2
    ids, consecutive = np.unique(np.where(instances > 0, instances, 0), return_inverse=True)
    consecutive = consecutive.reshape(instances.shape)
    if ids[0] != 0:  # no background pixel at all: shift so that objects are 1..n
        consecutive = consecutive + 1
    n_objects = int(np.count_nonzero(ids))
    if n_objects < 2:
        return d1, d2
    margin = int(math.ceil(cutoff))
    for index, box in enumerate(ndi.find_objects(consecutive), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, size))
            for s, size in zip(box, instances.shape, strict=True)
        )
        # all pixels of this object lie in its box, so distances computed in
        # the crop equal distances computed in the whole image
        dist = ndi.distance_transform_edt(consecutive[grown] != index).astype(np.float32)
        dist[dist > cutoff] = np.inf
        near1, near2 = d1[grown], d2[grown]  # views: updated in place
        np.minimum(near2, np.maximum(near1, dist), out=near2)
        np.minimum(near1, dist, out=near1)
    return d1, d2
