"""From class probabilities to semantic and instance label images."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

InstanceMethod = Literal["seeded_watershed", "components", "none"]
#: Largest ``min_size`` a model file may set (pixels).
MAX_MIN_SIZE = 2**31 - 1


@dataclass(frozen=True)
class InstanceRule:
    """How a model's classes turn into separate objects.

    Parameters
    ----------
    method : {"seeded_watershed", "components", "none"}
        ``"seeded_watershed"``: connected regions of the ``seed_classes``
        (e.g. object interiors) are seeds that grow, by watershed on the
        foreground probability, over all ``foreground_classes`` (interior and
        boundary); touching objects stay apart because their interiors are
        separated by boundary pixels. Foreground with no seed is not an
        object (on noisy images a weak model paints specks of boundary
        class; counting them would multiply false objects). ``"components"``: connected components
        of the foreground classes (the paper's two-class scheme, where the
        weight map teaches the network to leave a gap between touching cells;
        also the EM scheme, where cell interiors are separated by membranes).
        ``"none"``: the model has no notion of objects.
    foreground_classes : list of int
        Class indices that belong to objects.
    seed_classes : list of int
        Class indices that mark object cores (``seeded_watershed`` only).
    min_size : int
        Objects (and seeds) smaller than this many pixels are dropped.
    seed_threshold : float or None
        ``seeded_watershed`` only: seeds are the pixels whose summed
        probability of the ``seed_classes`` exceeds this, instead of the
        pixels where a seed class is the most probable. A high threshold
        keeps a gap in a faint membrane from merging two cells (EM).
    foreground_threshold : float or None
        Object pixels are those whose summed probability of the
        ``foreground_classes`` exceeds this, instead of the pixels where a
        foreground class is the most probable. A network trained with
        class-balanced weights over-predicts the rare boundary class, so its
        objects come out a few pixels too large; a threshold calibrated on
        the training data (:func:`~napari_unet.core.training.calibration.calibrate_foreground_threshold`)
        brings their outlines back. None (older files): the most probable class.
    """

    method: InstanceMethod = "components"
    foreground_classes: list[int] = field(default_factory=lambda: [1])
    seed_classes: list[int] = field(default_factory=list)
    min_size: int = 0
    seed_threshold: float | None = None
    foreground_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("seeded_watershed", "components", "none"):
            raise ValueError(f"unknown instance method {self.method!r}")
        if self.method == "seeded_watershed" and not self.seed_classes:
            raise ValueError("seeded_watershed needs at least one seed class")
        if self.method != "none" and not self.foreground_classes:
            raise ValueError("an instance rule needs at least one foreground class")
        if self.min_size < 0:
            raise ValueError("min_size cannot be negative")
        if self.seed_threshold is not None and not 0.0 < self.seed_threshold < 1.0:
            raise ValueError(f"seed_threshold must lie between 0 and 1, got {self.seed_threshold}")
        if self.foreground_threshold is not None and not 0.0 < self.foreground_threshold < 1.0:
            raise ValueError(f"foreground_threshold must lie between 0 and 1, got {self.foreground_threshold}")

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-serialisable dict (the thresholds only when set)."""
        data = asdict(self)
        for key in ("seed_threshold", "foreground_threshold"):
            if data[key] is None:
                del data[key]  # files without it stay readable by older versions
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRule:
        """Build from a dict written by :meth:`to_dict`; classes and ``min_size`` must be whole numbers."""
        if not isinstance(data, dict):
            raise ValueError(f"the instance rule must be a JSON object, got {type(data).__name__}")
        known = {"method", "foreground_classes", "seed_classes", "min_size", "seed_threshold", "foreground_threshold"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown instance settings {sorted(unknown)}")
        thresholds = {key: data.get(key) for key in ("seed_threshold", "foreground_threshold")}
        for key, value in thresholds.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{key} must be a number or null, got {value!r}")
        min_size = data.get("min_size", 0)
        if not _is_int(min_size) or min_size > MAX_MIN_SIZE:
            raise ValueError(f"min_size must be a whole number from 0 to {MAX_MIN_SIZE}, got {min_size!r}")
        return cls(
            method=data["method"],
            foreground_classes=_classes(data["foreground_classes"], "foreground_classes"),
            seed_classes=_classes(data.get("seed_classes", []), "seed_classes"),
            min_size=min_size,
            **{key: None if value is None else float(value) for key, value in thresholds.items()},
        )

    def with_foreground_threshold(self, threshold: float | None, /) -> InstanceRule:
        """The same rule with another ``foreground_threshold`` (None: the most probable class)."""
        return replace(self, foreground_threshold=threshold)

    def with_seed_threshold(self, threshold: float | None, /) -> InstanceRule:
        """The same rule with another ``seed_threshold`` (None: the most probable class).

        Raises
        ------
        ValueError
            If the rule does not grow objects from seeds, or ``threshold``
            does not lie between 0 and 1.

        Examples
        --------
        >>> InstanceRule("seeded_watershed", [1, 2], [1]).with_seed_threshold(0.9).seed_threshold
        0.9
        """
        if self.method != "seeded_watershed":
            raise ValueError(
                f"this model's objects are not grown from seeds (instance method {self.method!r}), "
                "so a seed threshold does not apply"
            )
        return replace(self, seed_threshold=None if threshold is None else float(threshold))

    def check_classes(self, n_classes: int) -> None:
        """Raise ``ValueError`` if the rule names a class the model lacks."""
        for c in [*self.foreground_classes, *self.seed_classes]:
            if not 0 <= c < n_classes:
                raise ValueError(f"instance rule names class {c}, but the model has {n_classes} classes")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _classes(value: Any, key: str) -> list[int]:
    """A list of class indices from a model file."""
    if not isinstance(value, list) or not all(_is_int(c) for c in value):
        raise ValueError(f"{key} must be a list of class numbers, got {value!r:.60}")
    return list(value)


def class_map(probabilities: np.ndarray) -> np.ndarray:
    """Most probable class per pixel.

    Parameters
    ----------
    probabilities : numpy.ndarray
        Shape (n_classes, Y, X), float.

    Returns
    -------
    numpy.ndarray
        Shape (Y, X), uint8 (uint16 if there are more than 255 classes).
    """
    dtype = np.uint8 if probabilities.shape[0] <= 256 else np.uint16
    return np.argmax(probabilities, axis=0).astype(dtype)


def instances_from_probabilities(probabilities: np.ndarray, rule: InstanceRule) -> np.ndarray:
    """Separate objects in one plane of class probabilities.

    Parameters
    ----------
    probabilities : numpy.ndarray
        Shape (n_classes, Y, X), float, summing to 1 over classes.
    rule : InstanceRule
        The model's instance rule.

    Returns
    -------
    numpy.ndarray
        Shape (Y, X), int32 labels: 0 is background, objects are 1..N with
        consecutive IDs.

    Examples
    --------
    >>> p = np.zeros((2, 4, 7)); p[0] = 1
    >>> p[:, 1:3, 1:3] = [[[0]], [[1]]]; p[:, 1:3, 4:6] = [[[0]], [[1]]]
    >>> int(instances_from_probabilities(p, InstanceRule()).max())
    2
    """
    if rule.method == "none":
        raise ValueError("this model has no instance rule; ask for classes or probabilities instead")
    rule.check_classes(probabilities.shape[0])
    classes = np.argmax(probabilities, axis=0)
    fg_prob = probabilities[rule.foreground_classes].sum(axis=0)
    foreground = foreground_mask(probabilities, rule, classes=classes)
    structure = ndi.generate_binary_structure(2, 1)
    if rule.method == "components":
        labels, _ = ndi.label(foreground, structure=structure)
    else:
        if rule.seed_threshold is None:
            seeds_mask = np.isin(classes, rule.seed_classes)
        else:
            seeds_mask = probabilities[rule.seed_classes].sum(axis=0) > rule.seed_threshold
        seeds, _ = ndi.label(seeds_mask, structure=structure)
        if rule.min_size:
            seeds = _remove_small(seeds, rule.min_size)
        # every object grows from a seed: foreground without a seed (specks of
        # boundary class on noise) is not an object
        labels = watershed(-fg_prob, markers=seeds, mask=foreground)
    if rule.min_size:
        labels = _remove_small(labels, rule.min_size)
    return relabel_consecutive(labels)


def foreground_mask(
    probabilities: np.ndarray, rule: InstanceRule, /, *, classes: np.ndarray | None = None
) -> np.ndarray:
    """The pixels that belong to objects under ``rule``: the one definition for every grid.

    Parameters
    ----------
    probabilities : numpy.ndarray
        (K, Y, X) class probabilities.
    rule : InstanceRule
        Its ``foreground_threshold`` on the summed foreground probability, or
        (None) the most probable class being a foreground class.
    classes : numpy.ndarray, optional
        The most probable class per pixel, when already computed.

    Returns
    -------
    numpy.ndarray
        (Y, X) bool.
    """
    if rule.foreground_threshold is not None:
        return probabilities[rule.foreground_classes].sum(axis=0) > rule.foreground_threshold
    if classes is None:
        classes = np.argmax(probabilities, axis=0)
    return np.isin(classes, rule.foreground_classes)


def labels_from_probabilities(probabilities: np.ndarray, /, *, kind: str, rule: InstanceRule) -> np.ndarray:
    """One plane of class probabilities as the labels a user asked for.

    The one place that turns probabilities into labels, for whole images,
    blocks of large images, training validation and Fine-tune previews.

    Parameters
    ----------
    probabilities : numpy.ndarray
        (K, Y, X) class probabilities of one plane.
    kind : {"instances", "classes"}
        Objects with one ID each (by ``rule``), or the most likely class per pixel.
    rule : InstanceRule
        The model's rule for separating objects.

    Returns
    -------
    numpy.ndarray
        (Y, X) labels: object IDs 1..N (0 background) or class indices.

    Examples
    --------
    >>> p = np.zeros((2, 4, 7)); p[0] = 1
    >>> p[:, 1:3, 1:3] = [[[0]], [[1]]]; p[:, 1:3, 4:6] = [[[0]], [[1]]]
    >>> int(labels_from_probabilities(p, kind="instances", rule=InstanceRule()).max())
    2
    >>> labels_from_probabilities(p, kind="classes", rule=InstanceRule()).max()
    np.uint8(1)
    """
    if kind == "instances":
        return instances_from_probabilities(probabilities, rule)
    if kind == "classes":
        return class_map(probabilities)
    raise ValueError(f"labels are instances or classes, got {kind!r}")


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    if small.any():
        labels = labels.copy()
        labels[small[labels]] = 0
    return labels


def relabel_consecutive(labels: np.ndarray, *, start: int = 1) -> np.ndarray:
    """Renumber objects to ``start, start+1, ...`` keeping 0 as background.

    Returns an int32 array (int64 if the IDs would not fit).
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    n_objects = int((ids != 0).sum())
    dtype = np.int32 if start + n_objects < 2**31 else np.int64
    new_ids = np.zeros(len(ids), dtype=dtype)
    new_ids[ids != 0] = np.arange(start, start + n_objects, dtype=dtype)
    return new_ids[inverse.reshape(labels.shape)]


def smallest_label_dtype(max_label: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds ``max_label``."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_label <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"label {max_label} does not fit in 64 bits")
