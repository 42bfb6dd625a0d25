"""The one fine-tuning path: painted annotation in, a trained copy of the model out.

The Fine-tune widget, ``napari-unet train`` and ``benchmarks/few_shot.py``
all run :func:`finetune_job` (the command line runs its two halves,
:func:`prepare_job` and :func:`training_job`, to tell bad inputs from failed
training). It adds to :func:`~napari_unet.core.training.loop.train_job`:

- building the samples: weight maps and, when fine-tuning, the model's own
  prediction of each annotated plane, so that annotated pixels the model got
  wrong weigh ``settings.mistake_weight`` times more;
- holding part of the annotation back for validation (or using given
  validation images), never what the user corrected
  (:mod:`~napari_unet.core.training.held_back`), and the held-back region
  of each image in the result, to show it;
- counting the corrected objects that the trained model segments as painted,
  and warning about corrected objects the model's minimum object size drops
  (:mod:`~napari_unet.core.training.corrections`);
- a truthful history: whether the mistake weight was really applied.

Nothing here touches a napari layer or Qt: the widget copies what it needs
from the layers on the GUI thread (:class:`AnnotatedImage`) and runs the job
in a worker thread; :func:`plane_preview` makes the previews it shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import numpy as np

from napari_unet.core.inference.device import resolve_device
from napari_unet.core.inference.layout import ImageLayout, infer_layout
from napari_unet.core.inference.predict import predict_plane_job
from napari_unet.core.inference.resample import resample_labels
from napari_unet.core.network.instances import labels_from_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import Progress, Stage
from napari_unet.core.training.annotations import AnnotationError
from napari_unet.core.training.calibration import seeds_hint
from napari_unet.core.training.corrections import count_corrections, small_corrections
from napari_unet.core.training.finetune import samples_from_arrays, split_validation
from napari_unet.core.training.held_back import held_back_masks
from napari_unet.core.training.loop import TrainingResult, TrainingSample, TrainingSettings, train_job
from napari_unet.core.training.object_sizes import annotation_factor, pooled_diameter, resample_annotation

Mode = Literal["corrections", "scribbles"]
#: Tile side of predictions that Stop may interrupt (a tile takes a fraction of a second on a CPU).
STOPPABLE_TILE = 256
#: What a job's preview hook returns.
T = TypeVar("T")


@dataclass(frozen=True)
class AnnotatedImage:
    """One image and its painted labels, as copied on the GUI thread.

    Attributes
    ----------
    name : str
        The image layer's name, for messages and the model's history.
    image : array-like
        The image layer's data (full resolution); read in the worker.
    labels : numpy.ndarray
        A private copy of the labels layer's data (the user may keep painting).
    channel_axis : int or None
        Channel axis of ``image`` (None: single channel or RGB).
    rgb : bool
        The image layer is RGB(A).
    plane : tuple of int or None
        Train on this stack plane only; None: every annotated plane.
    reviewed : numpy.ndarray of bool or None
        Corrections only: the pixels the user reviewed; None: whole planes.
    diameter : float or None
        The objects' diameter in image pixels that Segment used on this image
        (scribbles hold no whole objects to measure); None: unknown.
    """

    name: str
    image: Any
    labels: np.ndarray
    channel_axis: int | None = None
    rgb: bool = False
    plane: tuple[int, ...] | None = None
    reviewed: np.ndarray | None = None
    diameter: float | None = None


@dataclass(frozen=True)
class FineTuneRequest:
    """Everything a fine-tuning job needs, fixed when it starts.

    Attributes
    ----------
    model : SegmentationModel
        The model to fine-tune; never modified.
    images : sequence of AnnotatedImage
        The annotated images to train on.
    mode : {"corrections", "scribbles"}
        How the labels are read (see :mod:`napari_unet.core.training.finetune`).
    settings : TrainingSettings
        The recipe.
    validation_fraction : float
        Part of the annotation held back for validation (0: none); used when
        ``validation`` is empty.
    from_scratch : bool
        Re-initialise the weights (mistake weights are then not applied).
    validation : sequence of AnnotatedImage
        Separate validation images, instead of holding annotation back.
    record : mapping
        Extra facts for the model's training history.
    """

    model: SegmentationModel
    images: Sequence[AnnotatedImage]
    mode: Mode = "corrections"
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    validation_fraction: float = 0.2
    from_scratch: bool = False
    validation: Sequence[AnnotatedImage] = ()
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def weighs_mistakes(self) -> bool:
        """Whether mistakes of the model get ``settings.mistake_weight``.

        Not from scratch: the starting weights are thrown away, so their
        mistakes say nothing about what to learn.
        """
        return self.settings.mistake_weight != 1.0 and not self.from_scratch


@dataclass(frozen=True)
class PreviewSource:
    """The image previewed while training (the whole image; one plane is predicted)."""

    image: Any
    layout: ImageLayout


@dataclass(frozen=True)
class PreviewUpdate:
    """A prediction of the model being trained on one plane of the previewed image."""

    plane: tuple[int, ...]
    labels: np.ndarray
    step: int


def preview_kind(model: SegmentationModel) -> str:
    """``"instances"`` for models that separate objects, else ``"classes"``."""
    return "classes" if model.description.instance_rule.method == "none" else "instances"


def plane_preview(
    source: PreviewSource,
    /,
    *,
    plane: Callable[[], tuple[int, ...]] = tuple,
    every: float = 5.0,
    device: str = "auto",
    stop: threading.Event | None = None,
) -> Callable[[SegmentationModel, int], PreviewUpdate | None]:
    """A preview hook for :func:`finetune_job`: one plane predicted every ``every`` seconds.

    Parameters
    ----------
    source : PreviewSource
        The image to preview.
    plane : callable
        Returns the stack index of the plane to preview (``()`` for 2-D);
        called in the worker thread, so it must only read a plain value.
    every : float
        Seconds between previews, counted from the first step.
    device : str
        Where to predict.
    stop : threading.Event, optional
        Checked between tiles: a preview stops (and gives None) when it is set.

    Returns
    -------
    callable
        ``hook(model, step)``: a :class:`PreviewUpdate`, or None when none is due.
    """
    last: list[float] = []

    def hook(model: SegmentationModel, step: int) -> PreviewUpdate | None:
        now = time.perf_counter()
        if not last:
            last.append(now)
        if now - last[0] < every:
            return None
        index = tuple(plane())
        labels = _predict(source.layout.plane(source.image, index), model, preview_kind(model), device, stop=stop)
        last[0] = time.perf_counter()
        return None if labels is None else PreviewUpdate(index, labels, step)

    return hook


@dataclass(frozen=True)
class FineTuneSamples:
    """The samples a fine-tuning job trains and validates on.

    Attributes
    ----------
    train, validation : list of TrainingSample
        Training and held-back samples.
    mistake_weight : float
        The factor really applied to the model's mistakes (1.0: not applied).
    scales : list of dict
        Per annotated image: its objects' diameter and the factor it was
        resampled by to give them the model's size.
    held_back : dict of str to numpy.ndarray
        The held-back region of each image (a boolean mask shaped like its
        labels), by image name; empty when nothing was held back from the
        training images.
    warnings : list of str
        What the user must know about the annotation.
    """

    train: list[TrainingSample]
    validation: list[TrainingSample]
    mistake_weight: float
    scales: list[dict[str, Any]] = field(default_factory=list)
    held_back: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def finetune_job(
    request: FineTuneRequest,
    /,
    *,
    stop: threading.Event,
    preview: Callable[[SegmentationModel, int], T | None] | None = None,
) -> Generator[Progress | T, None, TrainingResult]:
    """Build training samples from the annotation, then train a copy of the model.

    Parameters
    ----------
    request : FineTuneRequest
        Model, annotated images and recipe.
    stop : threading.Event
        Set it to end training after the current step; the best model so far
        is returned.
    preview : callable, optional
        ``preview(model, step)`` with the model being trained, after every
        step in the worker thread (see :func:`plane_preview`); what it returns
        (None: nothing) is yielded.

    Yields
    ------
    Progress or what ``preview`` returned
        ``"prepare"`` while samples are built, then the training progress.

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        Nothing annotated, shapes or classes that do not fit (the message
        names the image).
    FloatingPointError
        Training diverged.
    """
    samples = yield from prepare_job(request, stop=stop)
    if samples is None:
        return untrained_result(request.model)
    return (yield from training_job(request, samples, stop=stop, preview=preview))


def prepare_job(
    request: FineTuneRequest, /, *, stop: threading.Event | None = None
) -> Generator[Progress, None, FineTuneSamples | None]:
    """The first half of :func:`finetune_job`: training and validation samples; None if stopped."""
    stop = stop or threading.Event()
    weigh = request.weighs_mistakes
    scales: list[dict[str, Any]] = []
    train = yield from _samples_of_all(request, request.images, stop, weigh_mistakes=weigh, scales=scales)
    if train is None:
        return None
    if request.validation:
        validation = yield from _samples_of_all(request, request.validation, stop, weigh_mistakes=False, scales=[])
        if validation is None:
            return None
    elif request.validation_fraction > 0:
        train, validation = split_validation(train, fraction=request.validation_fraction, seed=request.settings.seed)
    else:
        validation = []
    scaled = {scale["image"]: scale for scale in scales}
    shapes = {item.name: scaled[item.name]["scaled_shape"] for item in request.images}
    held_back = {} if request.validation else held_back_masks(validation, shapes)
    return FineTuneSamples(
        train,
        validation,
        request.settings.mistake_weight if weigh else 1.0,
        scales=[{k: v for k, v in scale.items() if k not in ("planes", "shape", "scaled_shape")} for scale in scales],
        held_back={name: _on_image_grid(mask, scaled[name]) for name, mask in held_back.items()},
        warnings=small_corrections(train + validation, rule=request.model.description.instance_rule),
    )


def _on_image_grid(mask: np.ndarray, scale: dict[str, Any]) -> np.ndarray:
    """A held-back mask of a resampled annotation, back on the grid (and planes) of the user's labels."""
    if scale["factor"] == 1.0:
        return mask
    back = np.zeros(scale["shape"], bool)
    for k, index in enumerate(scale["planes"]):
        back[index] = resample_labels(mask[k], back.shape[-2:])
    return back


def training_job(
    request: FineTuneRequest,
    samples: FineTuneSamples,
    /,
    *,
    stop: threading.Event | None = None,
    preview: Callable[[SegmentationModel, int], T | None] | None = None,
) -> Generator[Progress | T, None, TrainingResult]:
    """The second half of :func:`finetune_job`: train on ``samples``.

    The history records the mistake weight really applied (in its settings)
    and ``mistake_weight_applied``, never a factor that was not used. The
    first report, before training, holds the held-back regions
    (``data["held_back"]``, as :attr:`FineTuneSamples.held_back`); the
    warnings come as notices. The result carries both, and its verdict counts
    the corrected objects the trained model now segments as painted.
    """
    settings = replace(request.settings, mistake_weight=samples.mistake_weight)
    record = {
        "annotation": request.mode,
        "mistake_weight_applied": samples.mistake_weight != 1.0,
        "object_scales": samples.scales,
        **request.record,
    }
    yield Progress(
        Stage.PREPARE,
        1,
        1,
        message=held_back_message(samples),
        data={"held_back": samples.held_back},
    )
    for warning in samples.warnings:
        yield Progress(Stage.NOTICE, message=warning)
    result = yield from train_job(
        request.model,
        samples.train,
        settings=settings,
        validation=samples.validation,
        stop=stop,
        from_scratch=request.from_scratch,
        record=record,
        preview=preview,
    )
    verdict = result.verdict
    if verdict is not None and result.steps_done and not result.stopped and preview_kind(request.model) == "instances":
        counted = count_corrections(samples.train, lambda image: _objects(image, result.model, settings.device))
        verdict = replace(verdict, corrections=counted)
    warnings = list(samples.warnings)
    history = result.model.description.training_history
    if result.steps_done and history and not (verdict is not None and verdict.kept_previous):
        hint = seeds_hint(history[-1].get("outline_calibration"), result.model.description.instance_rule)
        if hint:
            yield Progress(Stage.NOTICE, message=hint)
            warnings.append(hint)
    return replace(result, verdict=verdict, held_back=samples.held_back, warnings=warnings)


def held_back_message(samples: FineTuneSamples) -> str:
    """``"held back for validation: a.tif rows 416-519, columns 0-695 (23 objects)"``, or why nothing is."""
    from napari_unet.core.training.held_back import describe_region

    if not samples.held_back:
        if samples.validation:
            return f"validating on {len(samples.validation)} separate plane(s)"
        return "nothing held back for validation (too few objects outside the corrections, or none asked for)"
    parts = [f"{name} {describe_region(mask)}" for name, mask in samples.held_back.items()]
    return "held back for validation: " + "; ".join(parts)


def _samples_of_all(
    request: FineTuneRequest,
    images: Sequence[AnnotatedImage],
    stop: threading.Event,
    *,
    weigh_mistakes: bool,
    scales: list[dict[str, Any]],
) -> Generator[Progress, None, list[TrainingSample] | None]:
    """Samples of every image in turn, each at the model's object size (``scales`` gets how); None if stopped."""
    samples: list[TrainingSample] = []
    for i, item in enumerate(images):
        yield Progress(Stage.PREPARE, i, len(images), message=f"reading the annotation of {item.name}")
        try:
            item, scale = at_model_scale(item, request.model, mode=request.mode, from_scratch=request.from_scratch)
            scales.append(scale)
            if scale["factor"] != 1.0:
                yield Progress(Stage.NOTICE, message=scale["note"], data={"object_scale": scale})
            samples += yield from _samples_of(
                item, request.model, request.mode, request.settings, stop, weigh_mistakes=weigh_mistakes
            )
        except AnnotationError as exc:
            raise AnnotationError(f"{item.name}: {exc}") from exc
        if stop.is_set():
            return None
    return samples


def at_model_scale(
    item: AnnotatedImage, model: SegmentationModel, /, *, mode: Mode, from_scratch: bool = False
) -> tuple[AnnotatedImage, dict[str, Any]]:
    """An annotated image resampled so its objects have the size the model was trained at.

    The objects' diameter is measured on the annotation (corrections: whole
    objects) or taken from the one Segment used (scribbles,
    :attr:`AnnotatedImage.diameter`). Only the annotated planes are kept;
    they come back as a (N, Y', X'[, C]) stack. Unchanged (factor 1) when
    the sizes agree within the tolerance, when either size is unknown, or
    from scratch (the new model takes the annotation's size).

    Returns
    -------
    tuple
        The image to train on, and ``{"image", "diameter", "model_diameter", "factor", "note"}``.
    """
    model_d = model.description.object_diameter_px
    layout = infer_layout(
        tuple(item.image.shape), in_channels=model.config.in_channels, channel_axis=item.channel_axis, rgb=item.rgb
    )
    planes = [item.plane] if item.plane is not None else [i for i in layout.plane_indices() if item.labels[i].any()]
    if mode == "corrections":
        diameter = pooled_diameter(np.asarray(item.labels[i]) for i in planes)
    else:
        diameter = item.diameter
    factor = 1.0 if from_scratch else annotation_factor(diameter, model_d)
    scale = {"image": item.name, "diameter": diameter, "model_diameter": model_d, "factor": factor}
    shape = tuple(item.labels.shape)
    if factor == 1.0 or not planes:
        return item, {**scale, "note": "", "shape": shape, "scaled_shape": shape, "planes": planes}
    resampled = [
        resample_annotation(
            np.asarray(layout.plane(item.image, i), dtype=np.float32),
            np.asarray(item.labels[i]),
            factor=factor,
            reviewed=None if item.reviewed is None else np.asarray(item.reviewed[i]),
        )
        for i in planes
    ]
    images = np.stack([r[0] for r in resampled])
    channels = images.shape[-1] > 1
    note = (
        f"{item.name}: annotated objects {diameter:.0f} px across, the model's {model_d:.0f} px: "
        f"trained on the image resampled ×{factor:.2f}"
    )
    twin = replace(
        item,
        image=images if channels else images[..., 0],
        labels=np.stack([r[1] for r in resampled]),
        reviewed=None if item.reviewed is None else np.stack([r[2] for r in resampled]),  # type: ignore[misc]
        channel_axis=3 if channels else None,
        rgb=False,
        plane=None,
    )
    where = {"shape": shape, "scaled_shape": tuple(twin.labels.shape), "planes": planes}
    return twin, {**scale, "note": note, **where}


def untrained_result(model: SegmentationModel) -> TrainingResult:
    """The result of a job stopped before its first training step: a copy of ``model``, unchanged."""
    return TrainingResult(
        model=model.copy(),
        baseline_metric=None,
        best_metric=None,
        metric_name="",
        steps_done=0,
        stopped=True,
        seconds=0.0,
        log=[],
    )


def _samples_of(
    item: AnnotatedImage,
    model: SegmentationModel,
    mode: Mode,
    settings: TrainingSettings,
    stop: threading.Event,
    *,
    weigh_mistakes: bool,
) -> Generator[Progress, None, list[TrainingSample]]:
    """Samples of one image; with ``weigh_mistakes``, the model's prediction of it weighs its mistakes."""
    layout = infer_layout(
        tuple(item.image.shape), in_channels=model.config.in_channels, channel_axis=item.channel_axis, rgb=item.rgb
    )
    planes = None if item.plane is None else [item.plane]
    previous = None
    expected = (*layout.stack_shape, *layout.plane_shape)
    if weigh_mistakes and item.labels.shape == expected:
        # The model's own prediction on the annotated planes: pixels where the
        # annotation disagrees with it are its mistakes and weigh more.
        used = planes or [idx for idx in layout.plane_indices() if item.labels[idx].any()]
        kind = "instances" if mode == "corrections" and preview_kind(model) == "instances" else "classes"
        previous = np.zeros(item.labels.shape, np.uint32)
        for n, idx in enumerate(used):
            yield Progress(Stage.PREPARE, n, len(used), message=f"predicting {item.name} with the current model")
            labels = _predict(layout.plane(item.image, idx), model, kind, settings.device, stop=stop)
            if labels is None:
                return []  # stopped: the job ends before training
            previous[idx] = labels
    return samples_from_arrays(
        item.image,
        item.labels,
        model,
        mode=mode,
        channel_axis=item.channel_axis,
        rgb=item.rgb,
        planes=planes,
        reviewed=item.reviewed if mode == "corrections" else None,
        previous=previous,
        mistake_weight=settings.mistake_weight if previous is not None else 1.0,
        name=item.name,
    )


def _objects(plane: np.ndarray, model: SegmentationModel, device: str) -> np.ndarray:
    """The objects of one (Y, X, C) plane, predicted in one go."""
    labels = _predict(plane, model, "instances", device)
    assert labels is not None  # without a stop event the prediction always ends
    return labels


def _predict(
    plane: Any, model: SegmentationModel, kind: str, device: str, *, stop: threading.Event | None = None
) -> np.ndarray | None:
    """Labels (objects or classes) of one (Y, X, C) plane; None if ``stop`` was set before it was done.

    With ``stop`` the plane is predicted one tile of :data:`STOPPABLE_TILE`
    pixels at a time (the result is the same) and ``stop`` is checked between them, so
    Stop does not wait for a whole plane, which can take seconds on a CPU.
    """
    job = predict_plane_job(
        plane,
        model,
        device=resolve_device(device),
        amp=False,
        engine="torch",
        tile_size=None if stop is None else STOPPABLE_TILE,
        batch_size=None if stop is None else 1,
    )
    while True:
        if stop is not None and stop.is_set():
            job.close()
            return None
        try:
            next(job)
        except StopIteration as done:
            probabilities = done.value
            break
    return labels_from_probabilities(probabilities, kind=kind, rule=model.description.instance_rule)
