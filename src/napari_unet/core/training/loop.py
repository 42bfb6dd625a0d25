"""Training and fine-tuning with the paper's recipe, as a stoppable job.

The job works on a *copy* of the model: the model the user has keeps
working, unchanged, until the user accepts the result.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from napari_unet.core.errors import UserError
from napari_unet.core.inference.device import resolve_device
from napari_unet.core.inference.model_fit import intensity_range, median_intensity
from napari_unet.core.inference.predict import predict_plane_job
from napari_unet.core.inference.tiling import read_mirrored
from napari_unet.core.network.geometry import patch_geometry
from napari_unet.core.network.instances import labels_from_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.normalization import apply_normalization
from napari_unet.core.progress import Progress, Stage, run_job
from napari_unet.core.training.annotations import IGNORE, AnnotationError, TrainingTarget
from napari_unet.core.training.augment import augment_sample
from napari_unet.core.training.calibration import ThresholdCalibration, held_back_seg, samples_calibration_job
from napari_unet.core.training.metrics import MatchScores, class_iou, region_match
from napari_unet.core.training.object_sizes import pooled_diameter
from napari_unet.core.training.recipe import (
    ANCHOR_WEIGHT,
    CORRECTION_FRACTION,
    FINE_TUNE_LEARNING_RATE,
    MISTAKE_WEIGHT,
    PATCH_SIZE,
    SCHEDULE,
    WEIGHT_AVERAGE,
    ZOOM,
)
from napari_unet.core.training.steps import BatchLoader, RetryingStep, make_optimizer, make_schedule
from napari_unet.core.training.verdict import MIN_HELD_BACK_OBJECTS, TOLERANCE, Verdict, judge
from napari_unet.core.training.weight_average import WeightAverage

#: What a training job's ``preview`` hook returns.
T = TypeVar("T")


@dataclass(frozen=True)
class TrainingSample:
    """One annotated plane.

    Attributes
    ----------
    image : numpy.ndarray
        (Y, X, C) raw intensities (any dtype), C = the model's input channels.
    target : TrainingTarget
        Classes (``IGNORE`` where unannotated) and per-pixel loss weights.
    instances : numpy.ndarray or None
        Ground-truth objects for validation by matched-object F1.
    name : str
        Shown in messages.
    corrected : numpy.ndarray of bool or None
        Annotated pixels that differ from the model's own prediction before
        training (the user's corrections); None when that prediction was not
        made.
    previous : numpy.ndarray or None
        The model's own prediction before training (objects or classes).
    region : numpy.ndarray of bool or None
        Validation samples: the held-back region that is scored (objects
        cut by its edge are not in it); None: the whole plane.
    source : str
        Name of the image the plane comes from.
    plane : tuple of int
        Stack index of the plane in that image (``()`` for 2-D).
    """

    image: np.ndarray
    target: TrainingTarget
    instances: np.ndarray | None = None
    name: str = ""
    corrected: np.ndarray | None = None
    previous: np.ndarray | None = None
    region: np.ndarray | None = None
    source: str = ""
    plane: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise AnnotationError(f"training images must be (Y, X, C), got shape {self.image.shape}")
        if self.image.shape[:2] != self.target.classes.shape:
            raise AnnotationError(
                f"image {self.name or ''} is {self.image.shape[:2]} but its labels are {self.target.classes.shape}; "
                "labels must have the same size as the image"
            )


class TrainingSettingsError(UserError, ValueError):
    """A training setting out of its range; the message names the setting and what it accepts."""


@dataclass
class TrainingSettings:
    """How to train. Defaults suit fine-tuning on a few images.

    Parameters
    ----------
    steps : int
        Optimiser steps (an upper bound when ``max_seconds`` is set).
    max_seconds : float or None
        Stop after this much wall time.
    patch_size : int
        Output patch side; the input is larger for ``valid`` networks.
    batch_size : int
        Patches per step.
    optimizer : {"adamw", "sgd"}
        AdamW (modern default) or the paper's SGD with momentum 0.99.
    learning_rate : float
        1e-3 suits AdamW from scratch and fine-tuning, 0.01 SGD (see
        :func:`~napari_unet.core.training.recipe.default_learning_rate`).
    weight_decay : float
        AdamW weight decay.
    loss : {"ce", "dice_ce"}
        Weighted cross-entropy (the paper), or Dice plus cross-entropy.
    mistake_weight : float
        Extra weight factor for pixels where the annotation differs from the
        model's previous prediction (see :func:`mistake_weights`).
    annotated_fraction : float
        Probability that a patch is centred on an annotated pixel.
    augment : bool
        Elastic deformation, flips, rotations and intensity changes.
    validate_every : int
        Steps between validations.
    seed : int
        Seed for patches, augmentation and initialisation.
    amp : bool
        Mixed precision on CUDA (training on the CPU stays float32).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    schedule : {"constant", "cosine"}
        Learning rate after a 20-step warm-up: constant (suits interactive
        fine-tuning, which the user stops), or a cosine decay to zero at the
        end of ``steps`` or ``max_seconds``, whichever comes first (suits
        training with a fixed budget).
    loader_threads : int
        Threads that cut and augment patches while the network trains. Each
        has its own random stream derived from ``seed`` and batches are
        consumed in a fixed order, so a run is reproducible for a given
        number of threads.
    correction_fraction : float
        Probability that a patch is centred on a corrected pixel (one where
        the annotation differs from the model's own prediction), when the
        samples have any; the other patches follow ``annotated_fraction``.
    anchor_weight : float
        Strength of the pull toward the starting weights (the L2-SP penalty
        ``anchor_weight * sum((w - w_start) ** 2)``), which keeps a
        fine-tuned model from forgetting what it did right elsewhere; 0:
        none. Not used from scratch.
    calibrate_outlines : bool
        After training, fit the instance rule's foreground threshold, then its
        seed threshold, to the annotated objects of the training samples
        (:func:`~napari_unet.core.training.calibration.calibrate_foreground_threshold`,
        :func:`~napari_unet.core.training.calibration.calibrate_seed_threshold`),
        so that the objects' outlines and number match the annotation; not kept if it
        lowers the held-back objects' SEG, or the held-back score below the
        starting model's, by more than ``TOLERANCE``. Skipped after Stop.
    augment_degradation : bool
        With ``augment``, also blur some patches and add noise to some
        (:func:`~napari_unet.core.training.augment.augment_sample`'s ``degrade``).
    augment_zoom : float
        With ``augment``, stretch or shrink each axis of every patch by a
        random factor up to this (:func:`~napari_unet.core.training.augment.augment_sample`'s
        ``zoom``); 1: none.
    weight_average : float
        The largest decay of an exponential moving average of the weights
        (:class:`~napari_unet.core.training.weight_average.WeightAverage`):
        validations score, and the job returns, the averaged weights, which
        do not depend on the step a budget happens to end on. 0: the
        weights of the last step, unaveraged.
    """

    steps: int = 200
    max_seconds: float | None = None
    patch_size: int = PATCH_SIZE
    batch_size: int = 4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = FINE_TUNE_LEARNING_RATE
    weight_decay: float = 1e-4
    loss: Literal["ce", "dice_ce"] = "ce"
    mistake_weight: float = MISTAKE_WEIGHT
    annotated_fraction: float = 0.9
    augment: bool = True
    validate_every: int = 25
    seed: int = 0
    amp: bool = True
    device: str = "auto"
    schedule: Literal["constant", "cosine"] = SCHEDULE
    loader_threads: int = 1
    correction_fraction: float = CORRECTION_FRACTION
    anchor_weight: float = ANCHOR_WEIGHT
    calibrate_outlines: bool = True
    augment_degradation: bool = False
    augment_zoom: float = ZOOM
    weight_average: float = WEIGHT_AVERAGE

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TrainingSettingsError("steps must be at least 1")
        if self.batch_size < 1:
            raise TrainingSettingsError("batch_size must be at least 1")
        if self.patch_size < 8:
            raise TrainingSettingsError("patch_size must be at least 8 pixels")
        if self.optimizer not in ("adamw", "sgd"):
            raise TrainingSettingsError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.loss not in ("ce", "dice_ce"):
            raise TrainingSettingsError(f"loss must be ce or dice_ce, got {self.loss!r}")
        if self.schedule not in ("constant", "cosine"):
            raise TrainingSettingsError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.loader_threads < 1:
            raise TrainingSettingsError("loader_threads must be at least 1")
        if not self.learning_rate > 0:
            raise TrainingSettingsError("learning_rate must be positive")
        if not 0 <= self.correction_fraction <= 1:
            raise TrainingSettingsError("correction_fraction must be between 0 and 1")
        if not self.anchor_weight >= 0:
            raise TrainingSettingsError("anchor_weight cannot be negative")
        if not 1 <= self.augment_zoom <= 4:
            raise TrainingSettingsError("augment_zoom must be between 1 (none) and 4")
        if not 0 <= self.weight_average < 1:
            raise TrainingSettingsError("weight_average must be at least 0 and below 1 (0: no averaging)")


@dataclass
class TrainingResult:
    """What a training job produced.

    Attributes
    ----------
    model : SegmentationModel
        The trained copy (best validation state if validation was given).
    baseline_metric, best_metric : float or None
        Validation metric before training and the best one reached.
    metric_name : str
        ``"F1@0.5"`` for instance models, ``"mean IoU"`` otherwise.
    steps_done : int
        Steps actually run.
    stopped : bool
        True if stopped early by the user.
    log : list of dict
        Step, loss and metric records.
    verdict : Verdict or None
        What the run did on the held-back annotation, in words; None for a
        run that trained nothing.
    held_back : dict of str to numpy.ndarray
        Fine-tuning jobs: the held-back region of each image (a boolean mask
        shaped like its labels), by image name; empty when nothing was held
        back.
    warnings : list of str
        Things the user must know about the annotation (e.g. corrected
        objects too small to be kept by the model's instance rule).
    """

    model: SegmentationModel
    baseline_metric: float | None
    best_metric: float | None
    metric_name: str
    steps_done: int
    stopped: bool
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list)
    verdict: Verdict | None = None
    held_back: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def mistake_weights(target: TrainingTarget, previous: np.ndarray, /, *, factor: float) -> TrainingTarget:
    """Multiply the weight of pixels the previous model got wrong by ``factor``.

    Parameters
    ----------
    target : TrainingTarget
        The corrected annotation.
    previous : numpy.ndarray
        (Y, X) class indices predicted before the correction.
    factor : float
        Weight multiplier for disagreeing annotated pixels (1 = no change).
    """
    wrong = target.annotated & (previous != target.classes)
    weights = target.weights.copy()
    weights[wrong] *= factor
    return TrainingTarget(target.classes, weights)


class _PatchSampler:
    """Random training patches that favour annotated pixels."""

    def __init__(self, samples: Sequence[TrainingSample], model: SegmentationModel, settings: TrainingSettings) -> None:
        self.samples = samples
        self.settings = settings
        self.input_size, self.margin, self.output_size = patch_geometry(model.config, settings.patch_size)
        norm = model.description.normalization
        self.stats = [norm.statistics(s.image) for s in samples]
        self.annotated = [np.flatnonzero(s.target.annotated) for s in samples]
        sizes = np.array([max(len(a), 1) for a in self.annotated], dtype=np.float64)
        self.choice_p = sizes / sizes.sum()
        self.corrected = [
            np.flatnonzero(s.corrected & s.target.annotated) if s.corrected is not None else np.zeros(0, np.int64)
            for s in samples
        ]
        counts = np.array([len(c) for c in self.corrected], dtype=np.float64)
        self.corrected_p = counts / counts.sum() if counts.sum() else None

    def _centre(self, rng: np.random.Generator) -> tuple[int, np.ndarray | None]:
        """The sample of the next patch, and the pixels to centre it on (None: anywhere)."""
        if self.corrected_p is not None and self.settings.correction_fraction > 0:
            if rng.random() < self.settings.correction_fraction:
                i = int(rng.choice(len(self.samples), p=self.corrected_p))
                return i, self.corrected[i]
        i = int(rng.choice(len(self.samples), p=self.choice_p))
        annotated = self.annotated[i]
        if len(annotated) and rng.random() < self.settings.annotated_fraction:
            return i, annotated
        return i, None

    def patch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i, centres = self._centre(rng)
        sample = self.samples[i]
        h, w = sample.target.classes.shape
        out = self.output_size
        assert out is not None  # the input size was made valid in __init__
        if centres is not None:
            cy, cx = np.unravel_index(int(rng.choice(centres)), (h, w))
            y0 = int(cy) - int(rng.integers(0, out))
            x0 = int(cx) - int(rng.integers(0, out))
        else:
            y0 = int(rng.integers(min(0, h - out), max(h - out, 0) + 1))
            x0 = int(rng.integers(min(0, w - out), max(w - out, 0) + 1))
        m = self.margin
        region = (slice(y0 - m, y0 - m + self.input_size), slice(x0 - m, x0 - m + self.input_size))
        image = apply_normalization(read_mirrored(sample.image, region), self.stats[i])
        classes = _crop_padded(sample.target.classes, region, IGNORE)
        weights = _crop_padded(sample.target.weights, region, 0.0)
        if self.settings.augment:
            # the paper warps whole 512 px images with sigma 10 px on a 3x3 grid;
            # on a smaller patch the same grid needs proportionally smaller shifts
            sigma = float(np.clip(10.0 * self.input_size / 512, 2.0, 10.0))
            image, classes, weights = augment_sample(
                image,
                classes,
                weights,
                rng=rng,
                elastic_sigma=sigma,
                degrade=self.settings.augment_degradation,
                zoom=self.settings.augment_zoom,
            )
        if m:
            classes = classes[m : m + out, m : m + out]
            weights = weights[m : m + out, m : m + out]
        return image, classes, weights


def _crop_padded(array: np.ndarray, region: tuple[slice, slice], fill: float) -> np.ndarray:
    """Crop ``region`` from a 2-D array, filling outside with ``fill``."""
    h, w = array.shape
    out = np.full((region[0].stop - region[0].start, region[1].stop - region[1].start), fill, dtype=array.dtype)
    ys = slice(max(region[0].start, 0), min(region[0].stop, h))
    xs = slice(max(region[1].start, 0), min(region[1].stop, w))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[
            ys.start - region[0].start : ys.stop - region[0].start,
            xs.start - region[1].start : xs.stop - region[1].start,
        ] = array[ys, xs]
    return out


@dataclass(frozen=True)
class Score:
    """A validation score and what it was measured on.

    Attributes
    ----------
    value : float
        Pooled matched-object F1 at IoU 0.5, or the mean IoU of the classes.
    objects : int
        Ground-truth objects scored (0 for the mean IoU).
    """

    value: float
    objects: int = 0


def evaluate(model: SegmentationModel, samples: Sequence[TrainingSample], /, *, device: torch.device) -> float:
    """Validation metric of ``model`` on annotated samples (see :func:`score`)."""
    return score(model, samples, device=device).value


def score(model: SegmentationModel, samples: Sequence[TrainingSample], /, *, device: torch.device) -> Score:
    """Validation score of ``model`` on annotated samples, inside their held-back regions.

    Matched-object F1 at IoU 0.5 when the model separates objects and the
    samples carry ground-truth instances, pooled over the samples (true and
    false positives and negatives added up) and counted inside each sample's
    ``region`` only (:func:`~napari_unet.core.training.metrics.region_match`);
    otherwise the mean IoU of the non-background classes over annotated
    pixels.
    """
    use_f1 = model.description.instance_rule.method != "none" and all(s.instances is not None for s in samples)
    matches: list[MatchScores] = []
    ious: list[float] = []
    for sample in samples:
        # PyTorch: the weights change between validations, a converted copy would be stale at once
        job = predict_plane_job(sample.image, model, device=device, amp=False, engine="torch")
        probs = run_job(job)
        if use_f1:
            pred = labels_from_probabilities(probs, kind="instances", rule=model.description.instance_rule)
            truth = sample.instances
            assert truth is not None
            region = sample.region if sample.region is not None else sample.target.annotated
            matches.append(region_match(truth, pred, region, threshold=0.5))
        else:
            per_class = class_iou(
                sample.target.classes,
                labels_from_probabilities(probs, kind="classes", rule=model.description.instance_rule),
                n_classes=model.config.n_classes,
                ignore=~sample.target.annotated,
            )
            ious.append(float(np.nanmean(per_class[1:])) if np.isfinite(per_class[1:]).any() else 0.0)
    if use_f1:
        tp, fp, fn = (sum(getattr(m, k) for m in matches) for k in ("tp", "fp", "fn"))
        return Score(MatchScores(0.5, tp, fp, fn).f1 if matches else float("nan"), objects=tp + fn)
    return Score(float(np.mean(ious)) if ious else float("nan"))


def metric_name(model: SegmentationModel, samples: Sequence[TrainingSample]) -> str:
    """Name of the metric :func:`evaluate` reports."""
    if model.description.instance_rule.method != "none" and all(s.instances is not None for s in samples):
        return "F1@0.5"
    return "mean IoU"


def _only_class(samples: Sequence[TrainingSample]) -> int | None:
    """The one class annotated in all ``samples``, or None if there are several."""
    present: set[int] = set()
    for s in samples:
        present.update(int(c) for c in np.unique(s.target.classes[s.target.annotated]))
        if len(present) > 1:
            return None
    return present.pop() if present else None


def _check_samples(model: SegmentationModel, samples: Sequence[TrainingSample]) -> None:
    """Refuse samples that cannot train ``model``, with a message that names the image."""
    if not samples:
        raise AnnotationError("no annotated images to train on; paint labels first")
    for s in samples:
        if not s.target.annotated.any():
            raise AnnotationError(f"image {s.name or ''} has no annotated pixels; paint some labels or leave it out")
        top = int(s.target.classes.max())
        if top >= model.config.n_classes:
            raise AnnotationError(
                f"labels of {s.name or 'an image'} use class {top}, but the model has only "
                f"{model.config.n_classes} classes ({', '.join(model.description.class_names)})"
            )
        if s.image.shape[-1] != model.config.in_channels:
            raise AnnotationError(
                f"image {s.name} has {s.image.shape[-1]} channels; the model expects {model.config.in_channels}"
            )


def _one_class_notice(model: SegmentationModel, samples: Sequence[TrainingSample]) -> Progress | None:
    """A notice when a single class is annotated (the model could only learn to predict it everywhere)."""
    only = _only_class(samples)
    if only is None:
        return None
    names = model.description.class_names
    others = ", ".join(repr(n) for i, n in enumerate(names) if i != only)
    return Progress(
        Stage.NOTICE,
        message=(
            f"Only the class {names[only]!r} is annotated, so training can only teach the model to predict "
            f"{names[only]!r} everywhere. Paint some pixels of {others} too, unless that is what you want."
        ),
    )


def _stop_test(stop: threading.Event | Callable[[], bool] | None) -> Callable[[], bool]:
    """``stop`` as a function that says whether to stop."""
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


class BestState:
    """Validation, and the weights to return.

    Fine-tuning (a baseline was measured): the held-back annotation is a
    guard, so the weights kept are the *latest* validated ones that score no
    worse than the starting model (within
    :data:`~napari_unet.core.training.verdict.TOLERANCE`); training goes on
    learning the corrections while it does no harm. When every validated
    model was worse, the starting weights are kept. From scratch (no
    baseline): the best validated weights.

    Parameters
    ----------
    model : SegmentationModel
        The model being trained (its network is validated and snapshotted).
    validation : sequence of TrainingSample
        Held-out samples; without them nothing is validated and the last
        weights are the result.
    device : torch.device
        Where to validate.
    baseline : Score or None
        The score before training (None: not measured); the weights as they
        are now are kept until a validation replaces them.

    Attributes
    ----------
    baseline : float or None
        The baseline's value.
    best : float
        The score of the weights kept (``-inf`` before any).
    trained_best : float or None
        The best score of any trained model.
    objects : int
        Held-back objects scored.
    """

    def __init__(
        self,
        model: SegmentationModel,
        validation: Sequence[TrainingSample],
        /,
        *,
        device: torch.device,
        baseline: Score | None,
    ) -> None:
        self.model, self.validation, self.device = model, validation, device
        self.baseline = None if baseline is None else baseline.value
        self.objects = 0 if baseline is None else baseline.objects
        self.best = self.baseline if self.baseline is not None else -math.inf
        self.trained_best: float | None = None
        self.replaced = False
        self._state = self._snapshot()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.network.state_dict().items()}

    def _keeps(self, metric: float) -> bool:
        if self.baseline is None or not math.isfinite(self.baseline):
            return metric > self.best
        return metric >= self.baseline - TOLERANCE

    def validate(self) -> float:
        """Evaluate the model now; keep its weights if they are to be returned; returns the metric."""
        self.model.network.eval()
        result = score(self.model, self.validation, device=self.device)
        metric = result.value
        self.objects = result.objects
        self.trained_best = metric if self.trained_best is None else max(self.trained_best, metric)
        if self._keeps(metric):
            self.best = metric
            self.replaced = True
            self._state = self._snapshot()
        return metric

    @property
    def best_metric(self) -> float | None:
        """The score of the weights returned (the baseline included); None without validation or measurement."""
        return self.best if self.validation and math.isfinite(self.best) else None

    @property
    def reverted_from(self) -> float | None:
        """The best trained score when every trained model was worse than the baseline (else None)."""
        if self.baseline is None or self.replaced or self.trained_best is None:
            return None
        return self.trained_best

    def restore(self) -> None:
        """Put the kept weights back into the model (with validation samples; else keep the last ones)."""
        if self.validation:
            self.model.network.load_state_dict(self._state)


def _history_entry(
    settings: TrainingSettings,
    samples: Sequence[TrainingSample],
    validation: Sequence[TrainingSample],
    *,
    from_scratch: bool,
    steps: int,
    seconds: float,
    metric: str,
    baseline: float | None,
    best: float | None,
    log: Sequence[dict[str, Any]],
    record: dict[str, Any] | None,
) -> dict[str, Any]:
    """The record of one training run for the model's ``training_history``; ``record`` is added verbatim."""
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "kind": "from scratch" if from_scratch else "fine-tune",
        "settings": asdict(settings),
        "images": [s.name for s in samples],
        "validation_images": [s.name for s in validation],
        "steps": steps,
        "seconds": round(seconds, 1),
        "metric_name": metric or None,
        "baseline_metric": baseline,
        "best_metric": best,
        "final_loss": log[-1]["loss"] if log else None,
        **(record or {}),
    }


def _working_copy(model: SegmentationModel, *, from_scratch: bool, device: torch.device) -> SegmentationModel:
    """A copy of ``model`` on ``device`` to train; re-initialised when ``from_scratch``."""
    work = model.copy()
    if from_scratch:
        work.network.reset_parameters()
    work.network.to(device)
    return work


def _record_object_size(model: SegmentationModel, samples: Sequence[TrainingSample], *, from_scratch: bool) -> None:
    """A model trained from scratch, or one that never recorded its size, takes its training objects' size."""
    if from_scratch or model.description.object_diameter_px is None:
        diameter = pooled_diameter(s.instances for s in samples)
        if diameter is not None:
            model.description.object_diameter_px = diameter


def _record_background(model: SegmentationModel, samples: Sequence[TrainingSample], *, from_scratch: bool) -> None:
    """Record where the training images' backgrounds lie (widened by a fine-tune's images, replaced from scratch)."""
    new = intensity_range(median_intensity(s.image, model) for s in samples)
    old = model.description.background_intensity
    if new is None:
        return
    if from_scratch or old is None:
        model.description.background_intensity = new
    else:
        model.description.background_intensity = (min(old[0], new[0]), max(old[1], new[1]))


def _calibrate_outlines(
    work: SegmentationModel,
    best: BestState,
    samples: Sequence[TrainingSample],
    /,
    *,
    device: torch.device,
    should_stop: Callable[[], bool],
) -> Generator[Progress, None, ThresholdCalibration | None]:
    """Fit the foreground and seed thresholds of the kept weights to the training samples' whole objects.

    The held-back samples are not used to fit; they judge the result: the
    fitted rule is not kept (and the calibration returned says the rule's own
    thresholds) when it lowers the held-back objects' SEG by more than
    :data:`~napari_unet.core.training.verdict.TOLERANCE`, or when the held-back
    score the verdict reports would fall below the starting model's by more
    than that. The verdict reports the score with the threshold kept.
    """
    if work.description.instance_rule.method == "none":
        return None
    best.restore()
    work.network.eval()
    calibration = yield from samples_calibration_job(work, samples, device=device, should_stop=should_stop)
    rule = work.description.instance_rule
    if calibration is None:
        return calibration
    fitted = calibration.fitted(rule)
    if fitted == rule:
        return calibration
    kept = calibration.unchanged(rule)
    if best.validation:
        own, new = held_back_seg(work, best.validation, [rule, fitted], device=device)
        if new.objects and new.score < own.score - TOLERANCE:
            return kept
    work.description.instance_rule = fitted
    if best.validation and best.best_metric is not None:
        after = score(work, best.validation, device=device).value
        floor = best.baseline - TOLERANCE if best.baseline is not None and math.isfinite(best.baseline) else -math.inf
        if not after >= floor:
            work.description.instance_rule = rule
            return kept
        best.best = after
    return calibration


def _baseline_report(baseline: float | None, /, *, name: str, steps: int) -> Progress:
    """The progress report of the validation before training (step 0)."""
    return Progress(
        Stage.TRAIN,
        0,
        steps,
        message=f"before training: {name} {baseline if baseline is not None else float('nan'):.3f}",
        data={"metric": baseline, "best": baseline, "metric_name": name},
    )


def _finish(
    work: SegmentationModel,
    best: BestState,
    /,
    *,
    settings: TrainingSettings,
    samples: Sequence[TrainingSample],
    validation: Sequence[TrainingSample],
    from_scratch: bool,
    steps: int,
    stopped: bool,
    seconds: float,
    metric: str,
    log: list[dict[str, Any]],
    record: dict[str, Any] | None,
) -> TrainingResult:
    """Keep the best weights, record the run in the model's history and move it back to the CPU."""
    best.restore()
    work.network.eval()
    history = _history_entry(
        settings,
        samples,
        validation,
        from_scratch=from_scratch,
        steps=steps,
        seconds=seconds,
        metric=metric,
        baseline=best.baseline,
        best=best.best_metric,
        log=log,
        record=record,
    )
    work.description.training_history.append(history)
    work.network.cpu()
    verdict = judge(
        metric_name=metric,
        before=best.baseline,
        after=best.best_metric,
        objects=best.objects,
        reverted_from=best.reverted_from,
        held_back=bool(validation),
        min_objects=MIN_HELD_BACK_OBJECTS,
    )
    return TrainingResult(
        model=work,
        baseline_metric=best.baseline,
        best_metric=best.best_metric,
        metric_name=metric,
        steps_done=steps,
        stopped=stopped,
        seconds=seconds,
        log=log,
        verdict=verdict,
    )


def train_job(
    model: SegmentationModel,
    samples: Sequence[TrainingSample],
    /,
    *,
    settings: TrainingSettings | None = None,
    validation: Sequence[TrainingSample] = (),
    stop: threading.Event | Callable[[], bool] | None = None,
    from_scratch: bool = False,
    record: dict[str, Any] | None = None,
    preview: Callable[[SegmentationModel, int], T | None] | None = None,
) -> Generator[Progress | T, None, TrainingResult]:
    """Train a copy of ``model`` on annotated samples; a generator of progress.

    Parameters
    ----------
    model : SegmentationModel
        Starting point; never modified.
    samples : sequence of TrainingSample
        Annotated training planes.
    settings : TrainingSettings, optional
        Recipe; defaults suit fine-tuning.
    validation : sequence of TrainingSample
        Held-out planes; the best model on them is kept.
    stop : threading.Event or callable, optional
        When set (or returning True), training ends after the current step
        (before the next one starts) and the best model validated so far is
        returned, without a last validation: Stop must answer in well under a
        second, and a validation pass can take seconds. Without validation
        samples the last model is returned. Closing the generator instead
        abandons the job.
    from_scratch : bool
        Re-initialise the weights instead of fine-tuning.
    record : dict, optional
        Extra facts (data used, ...) for the model's training history.
    preview : callable, optional
        ``preview(model, step)`` is called after every step's progress, in the
        thread that runs the job, unless Stop is set: ``model`` is the model
        the job would return now (the averaged weights with
        ``settings.weight_average``, else the model being trained), which
        does not change during the call (the next step changes it). Whatever it returns, other
        than None, is yielded; the live model itself never leaves the job.

    Yields
    ------
    Progress or the previews
        Stage ``"train"`` after every step, with ``data`` holding ``loss``
        and, after validations, ``metric`` and ``best``; ``"notice"`` for
        things the user should know. Between them, what ``preview`` returned.

    Returns
    -------
    TrainingResult
    """
    settings = settings or TrainingSettings()
    _check_samples(model, samples)
    notice = _one_class_notice(model, samples)
    if notice is not None:
        yield notice
    should_stop = _stop_test(stop)
    device = resolve_device(settings.device)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    work = _working_copy(model, from_scratch=from_scratch, device=device)
    _record_object_size(work, samples, from_scratch=from_scratch)
    _record_background(work, samples, from_scratch=from_scratch)
    average = WeightAverage(work, decay=settings.weight_average) if settings.weight_average else None
    kept = work if average is None else average.model  # what is validated, previewed, fitted and returned
    name = metric_name(work, validation) if validation else ""
    # Stop pressed while the samples were prepared: do not spend seconds on the baseline either
    measure = validation and not from_scratch and not should_stop()
    baseline = score(work, validation, device=device) if measure else None
    best = BestState(kept, validation, device=device, baseline=baseline)
    if validation:
        yield _baseline_report(best.baseline, name=name, steps=settings.steps)
    sampler = _PatchSampler(samples, work, settings)
    started = time.perf_counter()  # the time budget is for training, not for the baseline check
    optimizer = make_optimizer(work.network, settings)
    step_once = RetryingStep(
        work.network,
        optimizer,
        make_schedule(optimizer, settings, started=started),
        device=device,
        settings=settings,
        anchor=0.0 if from_scratch else settings.anchor_weight,
    )
    log: list[dict[str, Any]] = []
    stopped = False
    done = 0  # steps completed
    loader = BatchLoader(sampler.patch, rng, settings)
    try:
        for step in range(1, settings.steps + 1):
            if should_stop():  # set while the last step or a preview ran: do not start another step
                stopped = True
                break
            work.network.train()
            patches = loader.batch(step)
            loss = yield from step_once(patches, step)
            if average is not None:
                average.update()
            entry: dict[str, Any] = {"step": step, "loss": loss, "seconds": time.perf_counter() - started}
            out_of_time = settings.max_seconds is not None and time.perf_counter() - started >= settings.max_seconds
            stopped = should_stop()
            last = step == settings.steps or out_of_time or stopped
            done = step
            # a stopped job keeps the best model validated so far: no validation pass after Stop
            if validation and not stopped and (step % settings.validate_every == 0 or last):
                entry["metric"] = best.validate()
                entry["best"] = best.best
            log.append(entry)
            yield Progress(
                Stage.TRAIN,
                step,
                settings.steps,
                message=f"step {step}/{settings.steps}, loss {entry['loss']:.4f}",
                data={**entry, "metric_name": name},
            )
            if preview is not None and not should_stop():  # no preview delays Stop
                update = preview(kept, step)
                if update is not None:
                    yield update
            if last:
                break
    finally:
        loader.close()
    if settings.calibrate_outlines and done and not stopped:
        calibration = yield from _calibrate_outlines(kept, best, samples, device=device, should_stop=should_stop)
        if calibration is not None:
            record = {**(record or {}), "outline_calibration": calibration.to_dict()}
    return _finish(
        kept,
        best,
        settings=settings,
        samples=samples,
        validation=validation,
        from_scratch=from_scratch,
        steps=done,
        stopped=stopped,
        seconds=time.perf_counter() - started,
        metric=name,
        log=log,
        record=record,
    )
