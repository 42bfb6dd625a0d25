"""The Fine-tune job: painted layers in, a trained copy of the model out.

Everything here runs in the worker thread and touches no layer and no Qt
object: the widget copies what it needs from the layers on the GUI thread
(:class:`AnnotatedImage`), hands a :class:`FineTuneRequest` to
:func:`finetune_job`, and turns what the job yields back into layers.

The job is a generator in the style of the core (it yields
:class:`~napari_unet.core.Progress` and returns the result) and adds two
things to :func:`napari_unet.core.training.loop.train_job`: building the samples
(weight maps, the model's earlier prediction for mistake weighting) and a
preview of the model being trained, every ``preview_every`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from napari_unet._widgets.layers.errors import AnnotationError
from napari_unet.core import Progress, SegmentationModel, class_map, instances_from_probabilities
from napari_unet.core.inference.device import resolve_device
from napari_unet.core.inference.layout import ImageLayout, infer_layout
from napari_unet.core.inference.predict import predict_plane_job
from napari_unet.core.training.finetune import samples_from_arrays, split_validation
from napari_unet.core.training.loop import TrainingResult, TrainingSample, TrainingSettings, train_job

Mode = Literal["corrections", "scribbles"]
#: Tile side of predictions that Stop may interrupt (a tile takes a fraction of a second on a CPU).
STOPPABLE_TILE = 256


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
    """

    name: str
    image: Any
    labels: np.ndarray
    channel_axis: int | None = None
    rgb: bool = False
    plane: tuple[int, ...] | None = None
    reviewed: np.ndarray | None = None


@dataclass(frozen=True)
class FineTuneRequest:
    """Everything a fine-tuning job needs, fixed when it starts."""

    model: SegmentationModel
    images: Sequence[AnnotatedImage]
    mode: Mode = "corrections"
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    validation_fraction: float = 0.2
    from_scratch: bool = False


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


def finetune_job(
    request: FineTuneRequest,
    /,
    *,
    stop: threading.Event,
    preview: PreviewSource | None = None,
    preview_plane: Callable[[], tuple[int, ...]] = tuple,
    preview_every: float = 5.0,
) -> Generator[Progress | PreviewUpdate, None, TrainingResult]:
    """Build training samples from the annotation, then train a copy of the model.

    Parameters
    ----------
    request : FineTuneRequest
        Model, annotated images and recipe.
    stop : threading.Event
        Set it to end training after the current step; the best model so far
        is returned.
    preview : PreviewSource, optional
        Image to predict with the model being trained, every ``preview_every``
        seconds. Needs the live model in the training progress
        (``Progress.data["model"]``); without it there is no preview.
    preview_plane : callable
        Returns the stack index of the plane to preview (``()`` for 2-D);
        called in the worker thread, so it must only read a plain value.
    preview_every : float
        Seconds between previews.

    Yields
    ------
    Progress or PreviewUpdate
        ``"prepare"`` while samples are built, then the training progress
        (without the live model), and previews in between.

    Returns
    -------
    TrainingResult

    Raises
    ------
    AnnotationError
        Nothing annotated, shapes or classes that do not fit (the message
        names the image); a ``ValueError`` and a ``UserError``.
    FloatingPointError
        Training diverged.
    """
    model, settings = request.model, request.settings
    samples: list[TrainingSample] = []
    for i, item in enumerate(request.images):
        yield Progress("prepare", i, len(request.images), message=f"reading the annotation of {item.name}")
        try:
            samples += yield from _samples_of(item, model, request.mode, settings, stop)
        except ValueError as exc:
            raise AnnotationError(f"{item.name}: {exc}") from exc  # the core refused the annotation
        if stop.is_set():
            return untrained_result(model)
    if request.validation_fraction > 0:
        train, validation = split_validation(samples, fraction=request.validation_fraction, seed=settings.seed)
    else:
        train, validation = samples, []
    record = {"annotation": request.mode, "layers": [item.name for item in request.images]}
    job = train_job(
        model,
        train,
        settings=settings,
        validation=validation,
        stop=stop,
        from_scratch=request.from_scratch,
        record=record,
    )
    last_preview = time.perf_counter()
    while True:
        try:
            report = next(job)
        except StopIteration as done:
            return done.value
        live = report.data.get("model")
        if live is not None:  # the GUI thread must never see the network being trained
            report = replace(report, data={k: v for k, v in report.data.items() if k != "model"})
        yield report
        due = time.perf_counter() - last_preview >= preview_every
        if preview is not None and live is not None and due and not stop.is_set():  # no preview delays Stop
            # between two steps the job is paused at its yield: the network is not changing
            plane = tuple(preview_plane())
            labels = _predict(
                preview.layout.plane(preview.image, plane), live, preview_kind(live), settings.device, stop=stop
            )
            if labels is not None:  # None: Stop was pressed during the prediction
                yield PreviewUpdate(plane, labels, report.done)
            last_preview = time.perf_counter()


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
    item: AnnotatedImage, model: SegmentationModel, mode: Mode, settings: TrainingSettings, stop: threading.Event
) -> Generator[Progress, None, list[TrainingSample]]:
    layout = infer_layout(
        tuple(item.image.shape), in_channels=model.config.in_channels, channel_axis=item.channel_axis, rgb=item.rgb
    )
    planes = None if item.plane is None else [item.plane]
    previous = None
    expected = (*layout.stack_shape, *layout.plane_shape)
    if settings.mistake_weight != 1.0 and item.labels.shape == expected:
        # The model's own prediction on the annotated planes: pixels where the
        # annotation disagrees with it are its mistakes and weigh more.
        used = planes or [idx for idx in layout.plane_indices() if item.labels[idx].any()]
        kind = "instances" if mode == "corrections" and preview_kind(model) == "instances" else "classes"
        previous = np.zeros(item.labels.shape, np.uint32)
        for n, idx in enumerate(used):
            yield Progress("prepare", n, len(used), message=f"predicting {item.name} with the current model")
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
        mistake_weight=settings.mistake_weight,
        name=item.name,
    )


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
    if kind == "instances":
        return instances_from_probabilities(probabilities, model.description.instance_rule)
    return class_map(probabilities)
