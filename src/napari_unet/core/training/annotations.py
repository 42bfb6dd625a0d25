"""Turning annotations into training targets: class indices, ignore mask, weights.

Three kinds of annotation are understood:

- **instance labels** (0 = background, one ID per object, dense): become the
  three classes background / interior / boundary, weighted with the paper's
  weight map so that touching objects are separated;
- **semantic labels** (class index per pixel, dense), e.g. ISBI 2012 EM:
  used as they are, with class-balancing weights;
- **scribbles** (a napari labels layer where 0 = "not annotated", 1 =
  background, 2 = class 1, ...): sparse; unpainted pixels are ignored.

In every target, ``IGNORE`` (-1) marks pixels that carry no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.segmentation import find_boundaries

from napari_unet.core.errors import UserError
from napari_unet.core.training.weight_map import class_balance_weights, unet_weight_map


class AnnotationError(UserError, ValueError):
    """Painted labels that cannot be trained on: wrong shape, nothing painted, classes out of range.

    The message says what to paint instead.

    Examples
    --------
    >>> issubclass(AnnotationError, UserError) and issubclass(AnnotationError, ValueError)
    True
    """


IGNORE = -1


@dataclass
class TrainingTarget:
    """Per-pixel classes (``IGNORE`` where unannotated) and loss weights.

    Attributes
    ----------
    classes : numpy.ndarray
        (Y, X) int64.
    weights : numpy.ndarray
        (Y, X) float32, 0 where unannotated.
    """

    classes: np.ndarray
    weights: np.ndarray

    @property
    def annotated(self) -> np.ndarray:
        """Boolean mask of pixels that count."""
        return self.classes != IGNORE


def targets_from_instances(
    instances: np.ndarray,
    /,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    annotated: np.ndarray | None = None,
) -> TrainingTarget:
    """Background / interior / boundary targets from an instance label image.

    Parameters
    ----------
    instances : numpy.ndarray
        (Y, X) integer; 0 is background, each positive ID one object.
    w0, sigma : float
        The paper's border weight (height and width in pixels).
    annotated : numpy.ndarray of bool, optional
        Pixels that were annotated; the rest are ignored. Default: all.

    Returns
    -------
    TrainingTarget
        Classes 0 (background), 1 (interior), 2 (boundary: object pixels
        touching another object or the background).

    Examples
    --------
    >>> lab = np.zeros((6, 6), int); lab[1:5, 1:5] = 7
    >>> targets_from_instances(lab).classes[1:5, 1:5].tolist()
    [[2, 2, 2, 2], [2, 1, 1, 2], [2, 1, 1, 2], [2, 2, 2, 2]]
    """
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise AnnotationError(f"instance labels must be 2-D, got shape {instances.shape}")
    if instances.dtype.kind not in "biu":
        raise AnnotationError(f"instance labels must be integers, got {instances.dtype}")
    classes = instance_classes(instances)
    ignore = None if annotated is None else ~annotated
    balance = class_balance_weights(classes, ignore_mask=ignore)
    weights = unet_weight_map(instances.astype(np.int64), w0=w0, sigma=sigma, class_weights=balance, ignore_mask=ignore)
    if annotated is not None:
        classes[~annotated] = IGNORE
    return TrainingTarget(classes, weights)


def instance_classes(instances: np.ndarray, /) -> np.ndarray:
    """Background (0), interior (1) and boundary (2) classes of an instance image.

    Boundary pixels are object pixels touching another object or the
    background. Returns int64, same shape.
    """
    instances = np.asarray(instances)
    classes = np.zeros(instances.shape, np.int64)
    objects = instances > 0
    classes[objects] = 1
    classes[find_boundaries(instances, mode="inner") & objects] = 2
    return classes


def targets_from_semantic(labels: np.ndarray, /, *, n_classes: int) -> TrainingTarget:
    """Targets from a dense class image (values 0..n_classes-1)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise AnnotationError(f"class labels must be 2-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise AnnotationError(f"class labels must lie in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}")
    classes = labels.astype(np.int64)
    return TrainingTarget(classes, class_balance_weights(classes))


def targets_from_scribbles(painted: np.ndarray, /, *, n_classes: int) -> TrainingTarget:
    """Targets from sparse scribbles: 0 = not annotated, k = class k-1.

    Raises
    ------
    ValueError
        If nothing is painted, or a value exceeds the model's classes.
    """
    painted = np.asarray(painted)
    if painted.ndim != 2:
        raise AnnotationError(f"scribbles must be 2-D, got shape {painted.shape}")
    if painted.size == 0 or not painted.any():
        raise AnnotationError("nothing is annotated: paint some pixels of each class first (0 means 'not annotated')")
    if painted.min() < 0 or painted.max() > n_classes:
        raise AnnotationError(
            f"scribble values must lie in 0..{n_classes} (0 = not annotated, k = class k-1); found {painted.max()}"
        )
    classes = painted.astype(np.int64) - 1
    return TrainingTarget(classes, class_balance_weights(classes))
