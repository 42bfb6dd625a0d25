"""The user's corrections: which objects were corrected, whether the model can keep them, whether they stuck.

For models that separate objects, a correction is object-level, as Segment's
user sees it (:func:`object_corrections`): an annotated object that the
model's prediction before training did not match (IoU above 0.5: a missed
object, a merge split, a badly drawn one), or a predicted object that matches
nothing annotated (an erased false positive). One-pixel differences along
every boundary are not corrections. A sample's ``corrected`` mask holds
their pixels; a corrected object is an annotated object with a pixel in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.training.loop import TrainingSample
from napari_unet.core.training.metrics import iou_matrix
from napari_unet.core.training.verdict import CorrectionCount


def object_corrections(instances: np.ndarray, previous: np.ndarray, annotated: np.ndarray, /) -> np.ndarray:
    """Pixels of the objects the user corrected (see the module docstring), within ``annotated``.

    Parameters
    ----------
    instances : numpy.ndarray
        The corrected annotation (instance labels, 0 = background).
    previous : numpy.ndarray
        The model's instance labels before training.
    annotated : numpy.ndarray of bool
        Pixels that count.
    """
    iou, t_ids, p_ids = iou_matrix(instances, previous)
    matched = iou > 0.5 if iou.size else np.zeros((len(t_ids), len(p_ids)), bool)
    missed = t_ids[~matched.any(axis=1)] if len(t_ids) else t_ids
    erased = p_ids[~matched.any(axis=0)] if len(p_ids) else p_ids
    return (np.isin(instances, missed) | np.isin(previous, erased)) & annotated


def corrected_objects(sample: TrainingSample, /) -> np.ndarray:
    """IDs of the annotated objects of ``sample`` that the user corrected (empty without corrections)."""
    if sample.corrected is None or sample.instances is None:
        return np.zeros(0, np.int64)
    touched = sample.instances[sample.corrected & sample.target.annotated]
    ids = np.unique(touched)
    return ids[ids != 0]


def small_corrections(samples: Sequence[TrainingSample], /, *, rule: InstanceRule) -> list[str]:
    """Warnings for corrected objects smaller than the instance rule's ``min_size``.

    The rule removes such objects from every Segment result, so no training
    can make them appear; the user should know before waiting for it.
    """
    if not rule.min_size or rule.method == "none":
        return []
    small: list[str] = []
    total = 0
    for sample in samples:
        ids = corrected_objects(sample)
        if not ids.size:
            continue
        sizes = np.bincount(sample.instances.ravel(), minlength=int(ids.max()) + 1)[ids]  # type: ignore[union-attr]
        tiny = ids[sizes < rule.min_size]
        total += len(tiny)
        if tiny.size:
            small.append(
                f"{sample.source or sample.name} ({', '.join(str(int(i)) for i in tiny[:5])}{' ...' if len(tiny) > 5 else ''})"
            )
    if not total:
        return []
    return [
        f"{total} corrected object(s) are smaller than the model's minimum object size ({rule.min_size} pixels), "
        f"so Segment drops them whatever the training: {'; '.join(small)}. Paint them larger, or merge them "
        "into a neighbour if they are part of one."
    ]


def count_corrections(
    samples: Sequence[TrainingSample], predict: Callable[[np.ndarray], np.ndarray], /
) -> CorrectionCount | None:
    """How many corrected objects the model matched before training and matches now.

    Parameters
    ----------
    samples : sequence of TrainingSample
        Training samples with ``corrected``, ``previous`` and ``instances``.
    predict : callable
        ``predict(image)``: the instance labels of a (Y, X, C) plane with the
        trained model.

    Returns
    -------
    CorrectionCount or None
        None when no sample has corrected objects.
    """
    objects = before = after = 0
    for sample in samples:
        ids = corrected_objects(sample)
        if not ids.size or sample.previous is None:
            continue
        truth = np.where(np.isin(sample.instances, ids), sample.instances, 0)  # type: ignore[arg-type]
        objects += len(ids)
        before += _matched(truth, sample.previous)
        after += _matched(truth, predict(sample.image))
    return CorrectionCount(objects, before, after) if objects else None


def _matched(truth: np.ndarray, predicted: np.ndarray) -> int:
    """Objects of ``truth`` matched by an object of ``predicted`` at IoU above 0.5."""
    iou, _, _ = iou_matrix(truth, predicted)
    return int((iou > 0.5).any(axis=1).sum()) if iou.size else 0
