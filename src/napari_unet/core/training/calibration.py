"""Calibrating where a model's objects end: the foreground threshold of its instance rule.

A network trained with class-balanced weights (the U-Net paper's recipe, used
here) learns probabilities skewed toward the rare classes: the one-pixel
boundary class is painted several pixels wide, and objects taken as the
pixels whose most probable class is interior or boundary come out too large.
Measured on the val splits (``docs/performance.md#outline-calibration``), a
threshold on the summed foreground probability raised SEG from 0.546 to 0.623
(Fluo-C2DL-MSC, ``cells``) and AP@0.5 from 0.724 to 0.755 (67 DSB 2018 gray
images, ``nuclei``); fine-tuned on phase contrast (PhC-U373), the cells model
went from a plateau of SEG 0.80-0.83 to 0.90-0.92. The best threshold differs
from model to model (0.7 to 0.85), so it is chosen on the model's own
training annotations and stored in its instance rule.

The score is the Cell Tracking Challenge's SEG (mean Jaccard index of the
annotated objects with the predicted object covering more than half of
each): it rewards outlines that fit, and it counts only annotated objects,
so it can be measured on partly annotated images.

With the outlines fitted, the seeds that objects grow from are fitted too
(:func:`calibrate_seed_threshold`): a threshold on the interior probability
instead of the most probable class. Weak interior along the thin processes
of whole cells makes seeds of its own, and each becomes a false object that
also takes its part from the cell (Fluo-C2DL-MSC, a model fine-tuned on
three frames: F1@0.5 on the val frames 0.704 with the most probable class,
0.841 with seeds above 0.7, the threshold its whole training frames prefer;
the shipped ``cells`` model: 0.783 and 0.882 with 0.8). Seeds decide how many
objects there are, which SEG hardly sees (0.617 and 0.618), so they are
chosen by the matched-object F1 at IoU 0.5
(``docs/performance.md#seed-calibration``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_unet.core.inference.device import resolve_device
from napari_unet.core.inference.predict import predict_plane_job
from napari_unet.core.network.instances import InstanceRule, instances_from_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import Progress, Stage, run_job
from napari_unet.core.training.metrics import check_same_shape, match_objects

if TYPE_CHECKING:
    from napari_unet.core.training.loop import TrainingSample

#: Thresholds tried (None: the most probable class, the rule of older model files).
CANDIDATES: tuple[float | None, ...] = (None, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
#: Fewest annotated objects to calibrate on; with fewer the rule is kept.
MIN_OBJECTS = 10
#: A threshold replaces the current one only if it raises SEG by more than this.
MARGIN = 0.005
#: Seed thresholds tried on the interior probability (None: the most probable class).
SEED_CANDIDATES: tuple[float | None, ...] = (None, 0.5, 0.6, 0.7, 0.8, 0.9)
#: A seed threshold replaces the current one only if it raises the matched-object F1 by more than this.
SEED_MARGIN = 0.01


@dataclass(frozen=True)
class SegSum:
    """Sum of the annotated objects' Jaccard indices and their number (SEG = total / objects)."""

    total: float = 0.0
    objects: int = 0

    def __add__(self, other: SegSum) -> SegSum:
        return SegSum(self.total + other.total, self.objects + other.objects)

    @property
    def score(self) -> float:
        """SEG, NaN without objects."""
        return self.total / self.objects if self.objects else float("nan")


def seg_sum(truth: np.ndarray, predicted: np.ndarray, /) -> SegSum:
    """Jaccard indices of the objects of ``truth`` with the predicted object covering more than half of each.

    Parameters
    ----------
    truth, predicted : numpy.ndarray
        Instance labels of the same shape (0: background or not annotated).

    Returns
    -------
    SegSum
        The sum over the annotated objects (an object no predicted object
        covers by more than half counts 0) and their number.

    Examples
    --------
    >>> t = np.zeros((4, 6), int); t[:, :3] = 1
    >>> p = np.zeros((4, 6), int); p[:, :4] = 5
    >>> seg_sum(t, p).score
    0.75
    """
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    check_same_shape(truth, predicted, "the annotation and the prediction")
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(predicted.ravel(), return_inverse=True)
    key = t_inv.astype(np.int64) * len(p_ids) + p_inv
    pairs, overlap = np.unique(key, return_counts=True)
    t_of, p_of = pairs // len(p_ids), pairs % len(p_ids)
    t_area = np.bincount(t_inv, minlength=len(t_ids))
    p_area = np.bincount(p_inv, minlength=len(p_ids))
    real = (t_ids[t_of] != 0) & (p_ids[p_of] != 0) & (2 * overlap > t_area[t_of])
    jaccard = overlap[real] / (t_area[t_of[real]] + p_area[p_of[real]] - overlap[real])
    return SegSum(float(jaccard.sum()), int(np.count_nonzero(t_ids)))


def whole_annotated_objects(instances: np.ndarray, annotated: np.ndarray, /) -> np.ndarray:
    """``instances`` without the objects that touch an unannotated pixel (they may be cut).

    Examples
    --------
    >>> lab = np.array([[1, 1, 0, 2, 2]]); seen = np.array([[True, True, True, True, False]])
    >>> whole_annotated_objects(lab, seen).tolist()
    [[1, 1, 0, 0, 0]]
    """
    instances = np.asarray(instances)
    cut = np.unique(instances[~np.asarray(annotated, bool)])
    cut = cut[cut != 0]
    return np.where(np.isin(instances, cut), 0, instances) if cut.size else instances


def object_counts(
    truth: np.ndarray, predicted: np.ndarray, /, *, ignore: np.ndarray | None = None
) -> tuple[int, int, int]:
    """Matched, false and missed objects at IoU 0.5, leaving out predicted objects that touch ``ignore``.

    Parameters
    ----------
    truth, predicted : numpy.ndarray
        Instance labels of the same shape (0: background).
    ignore : numpy.ndarray, optional
        (Y, X) bool: pixels whose objects are not judged (not annotated, or
        annotated objects cut by the edge of the annotation).

    Returns
    -------
    tuple of int
        True positives, false positives, false negatives.

    Examples
    --------
    >>> t = np.zeros((4, 8), int); t[:, :3] = 1
    >>> p = np.zeros((4, 8), int); p[:, :3] = 1; p[:, 5:] = 2
    >>> object_counts(t, p), object_counts(t, p, ignore=np.arange(8)[None].repeat(4, 0) > 6)
    ((1, 1, 0), (1, 0, 0))
    """
    predicted = np.asarray(predicted)
    if ignore is not None:
        predicted = whole_annotated_objects(predicted, ~np.asarray(ignore, bool))
    scores = match_objects(np.asarray(truth), predicted, threshold=0.5)
    return scores.tp, scores.fp, scores.fn


@dataclass(frozen=True)
class SeedCalibration:
    """What calibrating the seed threshold found.

    Attributes
    ----------
    threshold : float or None
        The seed threshold to use (None: the most probable class).
    f1, before : float
        Matched-object F1 at IoU 0.5 on the calibration images with
        ``threshold`` and with the rule's own.
    scores : dict
        F1 of every threshold tried.
    """

    threshold: float | None
    f1: float
    before: float
    scores: dict[float | None, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Part of a line for a log or a notice."""
        chosen = "the most probable class" if self.threshold is None else f"interior above {self.threshold:g}"
        return f"seeds: {chosen}, F1@0.5 {self.before:.3f} -> {self.f1:.3f}"


def calibrate_seed_threshold(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    rule: InstanceRule,
    /,
    *,
    ignore: Sequence[np.ndarray | None] | None = None,
    candidates: Sequence[float | None] = SEED_CANDIDATES,
    margin: float = SEED_MARGIN,
) -> SeedCalibration | None:
    """The seed threshold that separates a model's objects best: the most matched and fewest false objects.

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        (K, Y, X) class probabilities of each image, at the model's scale.
    truths : sequence of numpy.ndarray
        (Y, X) annotated instances of each image (0: background).
    rule : InstanceRule
        The model's rule (its foreground threshold already fitted); its own
        ``seed_threshold`` is the one to beat.
    ignore : sequence of numpy.ndarray or None, optional
        Per image, the pixels whose predicted objects are not judged
        (:func:`object_counts`).
    candidates : sequence of float or None
        Seed thresholds to try.
    margin : float
        A candidate must beat the rule's own F1 by more than this.

    Returns
    -------
    SeedCalibration or None
        None for rules without seeds.

    Examples
    --------
    >>> p = np.zeros((3, 8, 16)); p[0] = 1
    >>> p[:, 2:6, 2:14] = np.array([0.0, 0.3, 0.7])[:, None, None]  # one object, weak interior...
    >>> p[:, 3:5, 3:6] = p[:, 3:5, 10:13] = np.array([0.0, 0.65, 0.35])[:, None, None]  # ...two cores...
    >>> p[:, 3:5, 4:5] = np.array([0.0, 0.95, 0.05])[:, None, None]  # ...one of them sure
    >>> truth = np.zeros((8, 16), int); truth[2:6, 2:14] = 1
    >>> rule = InstanceRule("seeded_watershed", [1, 2], [1])
    >>> calibrate_seed_threshold([p], [truth], rule).threshold
    0.7
    """
    if rule.method != "seeded_watershed":
        return None
    masks = list(ignore) if ignore is not None else [None] * len(truths)
    own = rule.seed_threshold
    tried = list(dict.fromkeys([own, *candidates]))
    scores: dict[float | None, float] = {}
    for threshold in tried:
        candidate = replace(rule, seed_threshold=threshold)
        tp = fp = fn = 0
        for probs, truth, mask in zip(probabilities, truths, masks, strict=True):
            counts = object_counts(truth, instances_from_probabilities(probs, candidate), ignore=mask)
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        scores[threshold] = 2 * tp / max(2 * tp + fp + fn, 1)
    before = scores[own]
    best = max(tried, key=lambda t: (scores[t], t == own))
    if not scores[best] > before + margin:
        best = own
    return SeedCalibration(best, scores[best], before, scores)


@dataclass(frozen=True)
class ThresholdCalibration:
    """What calibrating the foreground threshold found.

    Attributes
    ----------
    threshold : float or None
        The threshold to use (None: the most probable class).
    score, before : float
        SEG on the calibration images with ``threshold`` and with the rule's
        own threshold.
    objects : int
        Annotated objects scored.
    scores : dict
        SEG of every threshold tried.
    seeds : SeedCalibration or None
        The seed threshold fitted after the outlines (None: not fitted, the
        rule's own is kept).
    """

    threshold: float | None
    score: float
    before: float
    objects: int
    scores: dict[float | None, float] = field(default_factory=dict)
    seeds: SeedCalibration | None = None

    def fitted(self, rule: InstanceRule, /) -> InstanceRule:
        """``rule`` with the thresholds this calibration chose."""
        rule = rule.with_foreground_threshold(self.threshold)
        return rule if self.seeds is None else replace(rule, seed_threshold=self.seeds.threshold)

    def unchanged(self, rule: InstanceRule, /) -> ThresholdCalibration:
        """This calibration's record, for when ``rule`` is kept as it is."""
        return replace(self, threshold=rule.foreground_threshold, score=self.before, seeds=None)

    def summary(self) -> str:
        """One line for a log or a notice."""
        if not self.scores:
            return (
                f"outlines not fitted: {self.objects} whole annotated objects, at least {MIN_OBJECTS} needed"
                if self.objects
                else "outlines not fitted: no whole annotated objects"
            )
        chosen = "the most probable class" if self.threshold is None else f"threshold {self.threshold:g}"
        line = f"outlines calibrated on {self.objects} objects: {chosen}, SEG {self.before:.3f} -> {self.score:.3f}"
        return line if self.seeds is None else f"{line}; {self.seeds.summary()}"

    def to_dict(self) -> dict[str, float | int | None]:
        """The record kept in a model's training history."""
        record: dict[str, float | int | None] = {
            "threshold": self.threshold,
            "seg_before": self.before,
            "seg_after": self.score,
            "objects": self.objects,
        }
        if self.seeds is not None:
            record.update(
                seed_threshold=self.seeds.threshold, seed_f1_before=self.seeds.before, seed_f1_after=self.seeds.f1
            )
        return record


def calibrate_foreground_threshold(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    rule: InstanceRule,
    /,
    *,
    candidates: Sequence[float | None] = CANDIDATES,
    min_objects: int = MIN_OBJECTS,
    margin: float = MARGIN,
) -> ThresholdCalibration:
    """The foreground threshold that makes a model's objects fit the annotation best.

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        (K, Y, X) class probabilities of each image, at the model's scale
        (where its ``min_size`` applies).
    truths : sequence of numpy.ndarray
        (Y, X) annotated instances of each image (0: background or not
        annotated).
    rule : InstanceRule
        The model's rule; its own ``foreground_threshold`` is the one to beat.
    candidates : sequence of float or None
        Thresholds to try.
    min_objects : int
        With fewer annotated objects, the rule's threshold is kept.
    margin : float
        A candidate must beat the rule's own SEG by more than this.

    Returns
    -------
    ThresholdCalibration
        The chosen threshold (the rule's own when no candidate is clearly
        better, when there are too few objects, or for rules without objects).

    Examples
    --------
    >>> p = np.zeros((3, 8, 8)); p[0] = 1
    >>> p[:, 2:6, 2:6] = np.array([0.38, 0.02, 0.6])[:, None, None]  # object drawn as boundary, weakly
    >>> p[:, 3:5, 3:5] = np.array([0.0, 1.0, 0.0])[:, None, None]
    >>> truth = np.zeros((8, 8), int); truth[3:5, 3:5] = 1
    >>> rule = InstanceRule("seeded_watershed", [1, 2], [1])
    >>> calibrate_foreground_threshold([p], [truth], rule, min_objects=1).threshold
    0.65
    """
    if len(probabilities) != len(truths):
        raise ValueError(f"{len(probabilities)} probability images for {len(truths)} annotations")
    objects = sum(int(np.count_nonzero(np.unique(t))) for t in truths)
    own = rule.foreground_threshold
    if rule.method == "none" or objects < min_objects:
        return ThresholdCalibration(own, float("nan"), float("nan"), objects)
    tried = list(dict.fromkeys([own, *candidates]))
    scores: dict[float | None, float] = {}
    for threshold in tried:
        candidate = rule.with_foreground_threshold(threshold)
        total = SegSum()
        for probs, truth in zip(probabilities, truths, strict=True):
            total = total + seg_sum(truth, instances_from_probabilities(probs, candidate))
        scores[threshold] = total.score
    before = scores[own]
    best = max(tried, key=lambda t: (scores[t], t == own))
    if not scores[best] > before + margin:
        best = own
    return ThresholdCalibration(best, scores[best], before, objects, scores)


#: With fewer whole objects than this, the fitted seeds are a guess, and the user is told how to change them.
FEW_SEED_OBJECTS = 30


def seeds_hint(record: Mapping[str, Any] | None, rule: InstanceRule, /) -> str | None:
    """What to tell the user when a run's seed threshold rests on few objects (None otherwise).

    On three Fluo-C2DL-MSC frames (17 whole cells) the fitted seeds cut the
    val cells into pieces (F1@0.5 0.685), where seeds above 0.9 gave 0.912
    (``docs/performance.md``); the user can set them for Segment.

    Parameters
    ----------
    record : mapping or None
        The ``outline_calibration`` entry of the run's training history
        (:meth:`ThresholdCalibration.to_dict`).
    rule : InstanceRule
        The trained model's rule (only rules with seeds get a hint).

    Examples
    --------
    >>> rule = InstanceRule("seeded_watershed", [1, 2], [1])
    >>> seeds_hint({"objects": 17, "seed_threshold": None}, rule) is not None
    True
    >>> seeds_hint({"objects": 400, "seed_threshold": 0.6}, rule) is None
    True
    """
    objects = record.get("objects") if record else None
    if rule.method != "seeded_watershed" or objects is None or objects >= FEW_SEED_OBJECTS:
        return None
    return (
        f"The seed threshold that separates objects rests on only {objects} whole annotated objects. If Segment now "
        "cuts cells into pieces or joins two similar cells, raise the seed threshold (Seeds in the Segment widget, "
        "--seed-threshold on the command line; e.g. 0.90); if a faint cell goes missing or into a brighter "
        "neighbour, lower it."
    )


#: Most pixels (at the model's scale) predicted to calibrate; later images are left out.
MAX_CALIBRATION_PIXELS = 16_000_000


def calibration_job(
    model: SegmentationModel,
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    /,
    *,
    ignore: Sequence[np.ndarray | None] | None = None,
    device: torch.device | str = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
    max_pixels: int = MAX_CALIBRATION_PIXELS,
) -> Generator[Progress, None, ThresholdCalibration | None]:
    """Predict annotated images with ``model`` and calibrate its foreground, then its seed threshold; a generator.

    Parameters
    ----------
    model : SegmentationModel
        The model (not modified: apply the result with
        :meth:`~napari_unet.core.network.instances.InstanceRule.with_foreground_threshold`).
    images, truths : sequence of numpy.ndarray
        (Y, X, C) planes at the model's scale (as training samples hold them)
        and their (Y, X) annotated instances.
    ignore : sequence of numpy.ndarray or None, optional
        Per image, pixels whose predicted objects the seed threshold's F1 does
        not judge (:func:`object_counts`).
    device : torch.device or str
        Where to predict (PyTorch, float32: the weights may have just changed).
    should_stop : callable
        Checked before every image; when it returns True, nothing is calibrated.
    max_pixels : int
        Images beyond this many pixels in all are left out.

    Yields
    ------
    Progress
        Stage :attr:`~napari_unet.core.progress.Stage.CALIBRATE`, once per image.

    Returns
    -------
    ThresholdCalibration or None
        None when stopped, or when the model has no objects.
    """
    rule = model.description.instance_rule
    if rule.method == "none":
        return None
    device = resolve_device(device) if isinstance(device, str) else device
    masks = list(ignore) if ignore is not None else [None] * len(truths)
    chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    pixels = 0
    for image, truth, mask in zip(images, truths, masks, strict=True):
        if chosen and pixels + truth.size > max_pixels:
            break
        chosen.append((image, truth, mask))
        pixels += truth.size
    probabilities = []
    for i, (image, _truth, _mask) in enumerate(chosen):
        if should_stop():
            return None
        yield Progress(Stage.CALIBRATE, i, len(chosen), message=f"fitting outlines: image {i + 1}/{len(chosen)}")
        probabilities.append(run_job(predict_plane_job(image, model, device=device, amp=False, engine="torch")))
    if should_stop():
        return None
    truths = [t for _, t, _ in chosen]
    calibration = calibrate_foreground_threshold(probabilities, truths, rule)
    if calibration.scores:  # enough objects to judge
        seeds = calibrate_seed_threshold(
            probabilities, truths, calibration.fitted(rule), ignore=[m for _, _, m in chosen]
        )
        calibration = replace(calibration, seeds=seeds)
    yield Progress(Stage.CALIBRATE, len(chosen), len(chosen), message=calibration.summary())
    return calibration


def samples_calibration_job(
    model: SegmentationModel,
    samples: Sequence[TrainingSample],
    /,
    *,
    device: torch.device | str = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
) -> Generator[Progress, None, ThresholdCalibration | None]:
    """:func:`calibration_job` on the whole annotated objects of training samples (those with instances)."""
    annotated = [s for s in samples if s.instances is not None]
    if not annotated:
        return None
    truths = [whole_annotated_objects(s.instances, s.target.annotated) for s in annotated]  # type: ignore[arg-type]
    # objects on unannotated pixels, or on annotated objects cut by the annotation's edge, are not judged
    ignore = [~s.target.annotated | ((s.instances != 0) & (t == 0)) for s, t in zip(annotated, truths, strict=True)]
    return (
        yield from calibration_job(
            model, [s.image for s in annotated], truths, ignore=ignore, device=device, should_stop=should_stop
        )
    )


def held_back_seg(
    model: SegmentationModel,
    samples: Sequence[TrainingSample],
    rules: Sequence[InstanceRule],
    /,
    *,
    device: torch.device | str = "cpu",
) -> list[SegSum]:
    """SEG of each rule on the whole objects inside the samples' held-back regions (one prediction per sample).

    The threshold's own check: it moves outlines, which SEG measures and a
    matched-object F1 at IoU 0.5 sees only when an object crosses 0.5.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    totals = [SegSum() for _ in rules]
    for sample in samples:
        if sample.instances is None:
            continue
        region = sample.region if sample.region is not None else sample.target.annotated
        truth = whole_annotated_objects(sample.instances, region)
        probs = run_job(predict_plane_job(sample.image, model, device=device, amp=False, engine="torch"))
        totals = [
            t + seg_sum(truth, instances_from_probabilities(probs, r)) for t, r in zip(totals, rules, strict=True)
        ]
    return totals


def fitted_copy_job(
    model: SegmentationModel,
    samples: Sequence[TrainingSample],
    /,
    *,
    device: torch.device | str = "cpu",
) -> Generator[Progress, None, SegmentationModel]:
    """A copy of ``model`` whose outline threshold is fitted to ``samples``, as a training run's end does.

    For scoring a model in the middle of training as the user would get it
    (benchmarks' checkpoints). Samples without instances are left out; with
    too few whole objects the copy keeps the model's threshold.

    Parameters
    ----------
    model : SegmentationModel
        Not modified.
    samples : sequence of TrainingSample
        Training samples at the model's scale.
    device : torch.device or str
        Where to predict.

    Yields
    ------
    Progress
        As :func:`calibration_job`.

    Returns
    -------
    SegmentationModel
    """
    copy = model.copy()
    copy.network.eval()
    calibration = yield from samples_calibration_job(copy, samples, device=device)
    if calibration is not None:
        copy.description.instance_rule = calibration.fitted(copy.description.instance_rule)
    return copy
