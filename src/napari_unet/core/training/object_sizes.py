"""The object size of annotated images, and resampling them to a model's size before training.

A model is trained at one object size (recorded in its file as
``object_diameter_px``). Fine-tuning measures the diameter of the user's
annotated objects and resamples the image and its labels so those objects
have the model's size before patches are cut; then the network learns the
same size it is applied at (Segment resamples images the same way). A model
trained from scratch records the size of its training objects.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_unet.core.inference.object_scale import MAX_FACTOR, MIN_FACTOR, TOLERANCE
from napari_unet.core.inference.resample import resample_image, resample_labels, scaled_shape
from napari_unet.core.network.object_size import equivalent_diameters

__all__ = ["annotation_factor", "pooled_diameter", "resample_annotation"]


def pooled_diameter(label_planes: Iterable[np.ndarray | None], /) -> float | None:
    """Median equivalent diameter of the objects of several (Y, X) label planes, pooled; None without objects.

    Examples
    --------
    >>> a = np.zeros((20, 20), int); a[2:8, 2:8] = 1
    >>> b = np.zeros((20, 20), int); b[2:12, 2:12] = 1; b[14:18, 14:18] = 2
    >>> round(pooled_diameter([a, b, None]), 2)
    6.77
    """
    sizes = [equivalent_diameters(np.asarray(p)) for p in label_planes if p is not None]
    pooled = np.concatenate(sizes) if sizes else np.zeros(0)
    return float(np.median(pooled)) if pooled.size else None


def annotation_factor(annotated_diameter: float | None, model_diameter: float | None, /) -> float:
    """The factor that gives annotated objects the model's size: 1 within the tolerance or when unknown.

    Examples
    --------
    >>> annotation_factor(40.0, 20.0), annotation_factor(21.0, 20.0), annotation_factor(None, 20.0)
    (0.5, 1.0, 1.0)
    """
    if annotated_diameter is None or model_diameter is None:
        return 1.0
    ratio = model_diameter / annotated_diameter
    if 1 / TOLERANCE <= ratio <= TOLERANCE:
        return 1.0
    return float(min(MAX_FACTOR, max(MIN_FACTOR, ratio)))


def resample_annotation(
    image: np.ndarray, labels: np.ndarray, /, *, factor: float, reviewed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An annotated (Y, X, C) plane, its (Y, X) labels and reviewed mask resampled by ``factor``.

    The image is resampled as Segment resamples it (bicubic when it grows,
    linearly with anti-aliasing when it shrinks), labels and the mask by
    nearest neighbour (IDs and painted classes are kept).

    Examples
    --------
    >>> image, labels = np.ones((10, 8, 1)), np.zeros((10, 8), np.uint8)
    >>> [a.shape for a in resample_annotation(image, labels, factor=0.5)[:2]]
    [(5, 4, 1), (5, 4)]
    """
    if factor == 1.0:
        return image, labels, reviewed
    shape = scaled_shape(labels.shape[:2], factor)
    mask = None if reviewed is None else resample_labels(np.asarray(reviewed), shape)
    return resample_image(np.asarray(image), shape), resample_labels(np.asarray(labels), shape), mask
