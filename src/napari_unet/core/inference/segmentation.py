"""Segment an image (2-D, multichannel, RGB or a stack) with a model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from napari_unet.core.errors import UserError
from napari_unet.core.inference.budget import check_whole_image
from napari_unet.core.inference.device import compute_dtype, resolve_device
from napari_unet.core.inference.layout import infer_layout
from napari_unet.core.inference.model_fit import fit_notice
from napari_unet.core.inference.object_scale import ObjectScale, choose_scale_job
from napari_unet.core.inference.options import InferenceOptions, OptionsError, inference_options
from napari_unet.core.inference.plane_outputs import plane_outputs_job
from napari_unet.core.network.instances import smallest_label_dtype
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.stitching import StitchError, check_stitching, stitch_planes
from napari_unet.core.progress import Job, Progress, Stage, run_job, within


class ImageTypeError(UserError, ValueError):
    """Pixels of a type the network cannot take (text, complex numbers, objects)."""


OutputKind = Literal["instances", "classes", "probabilities"]
OUTPUT_KINDS: tuple[str, ...] = ("instances", "classes", "probabilities")


def output_kind_of(output_kind: str | None, output: str | None = None, /) -> OutputKind:
    """The output kind asked for: ``output_kind``, or its deprecated alias ``output``; default ``"instances"``.

    Raises
    ------
    TypeError
        Both were given, with different values.
    ValueError
        An unknown kind.
    """
    if output is not None and output_kind is not None and output != output_kind:
        raise TypeError(f"give output_kind= only (output= is its old name), got {output_kind!r} and {output!r}")
    kind = output_kind if output_kind is not None else output if output is not None else "instances"
    if kind not in OUTPUT_KINDS:
        raise OptionsError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
    return kind  # type: ignore[return-value]


@dataclass
class SegmentationResult:
    """What a segmentation produced.

    Attributes
    ----------
    output : {"instances", "classes", "probabilities"}
        What was asked for.
    labels : numpy.ndarray or None
        Instance labels (0 = background, one ID per object, unique across the
        whole stack) or class indices, shaped like the image without its
        channel axis; the smallest unsigned dtype that fits.
    probabilities : numpy.ndarray or None
        float32, shape ``stack + (n_classes, Y, X)``; only when asked for.
    class_names : list of str
        The model's class names.
    n_objects : int
        Number of objects (instances only).
    device : str
        Where it ran.
    seconds : float
        Wall time.
    object_scale : ObjectScale or None
        The objects' diameter used, where it came from, and the factor the
        image was resampled by (see :mod:`~napari_unet.core.inference.object_scale`).
    precision : str
        What the network computed in: ``"float32"``, or ``"bfloat16"`` /
        ``"float16"`` with mixed precision (see
        :func:`~napari_unet.core.inference.device.compute_dtype`).
    """

    output: str
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    class_names: list[str]
    n_objects: int
    device: str
    seconds: float
    object_scale: ObjectScale | None = field(default=None)
    precision: str = "float32"


def segment_job(
    image: Any,
    model: SegmentationModel,
    /,
    *,
    output_kind: OutputKind | None = None,
    channel_axis: int | None = None,
    rgb: bool = False,
    keep_probabilities: bool = False,
    pixel_size: float | None = None,
    options: InferenceOptions | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    amp: bool | None = None,
    engine: str | None = None,
    diameter: float | str | None = None,
    output: OutputKind | None = None,
    stitch_threshold: float | None = None,
    stitch_axis: int = -1,
) -> Job[SegmentationResult]:
    """Segment every plane of an image; a generator yielding progress.

    Parameters
    ----------
    image : array-like
        numpy or dask array: (Y, X), (Y, X, 3|4) with ``rgb=True``, a channel
        axis given by ``channel_axis``, and any leading stack axes (Z, T).
        Any integer, float or bool dtype; NaN/Inf pixels are treated as 0
        after normalisation.
    model : SegmentationModel
        The model to apply.
    output_kind : {"instances", "classes", "probabilities"}
        Objects with one ID each (default), the most likely class per pixel,
        or the class probabilities.
    channel_axis : int, optional
        Axis holding channels for multichannel images.
    rgb : bool
        The last axis is RGB(A) colour.
    keep_probabilities : bool
        Also return probabilities when ``output_kind`` is labels.
    pixel_size : float, optional
        The image's pixel size (Y and X) in micrometres, for
        ``diameter="calibration"``.
    options : InferenceOptions, optional
        Device, tile and batch size, mixed precision, engine, object
        diameter and engine cache (see
        :class:`~napari_unet.core.inference.options.InferenceOptions`).
        Without a cache, the job starts an empty one: its result does not
        depend on earlier calls.
    device, tile_size, batch_size, amp, engine, diameter
        Shorthand for ``options=InferenceOptions(device=..., ...)``; not
        together with ``options``.
    output : str, optional
        Deprecated name of ``output_kind``.
    stitch_threshold : float, optional
        Instances only: after every plane is labelled, link objects of
        neighbouring planes along ``stitch_axis`` whose IoU is at least this
        (e.g. 0.25) into one ID (:func:`~napari_unet.core.network.stitching.stitch_planes`).
        Default None: each plane keeps its own IDs.
    stitch_axis : int
        The stack axis to stitch along, counted among the stack axes
        (default -1: the last one, Z of a TZYX stack).

    Yields
    ------
    Progress
        Passes that estimate the objects' size (:attr:`Stage.OBJECT_SIZE`),
        per batch of tiles (:attr:`Stage.TILES`) and per finished plane
        (:attr:`Stage.PLANE`).

    Returns
    -------
    SegmentationResult

    Raises
    ------
    ImageTooLargeError
        Before any work, when the results and working arrays would not fit
        in the available memory (:func:`~napari_unet.core.inference.budget.check_whole_image`);
        segment such images block by block
        (:func:`~napari_unet.core.blockwise.to_zarr.segment_to_zarr_job`).
    DiameterError
        A diameter larger than the image, or one the model cannot use.

    Notes
    -----
    The image is resampled so that its objects have the size the model was
    trained at, predicted there, and the results mapped back to its grid
    (labels by nearest neighbour, probabilities linearly); the model's pixel
    rules (the minimum object size) apply at its own scale. A stack's middle
    plane gives the estimate for all of its planes.
    """
    output = output_kind_of(output_kind, output)
    if stitch_threshold is not None and output != "instances":
        raise StitchError(f"stitching links objects, so it needs output_kind='instances', not {output!r}")
    settings = inference_options(
        options, device=device, tile_size=tile_size, batch_size=batch_size, amp=amp, engine=engine, diameter=diameter
    ).with_cache()
    dtype = np.dtype(getattr(image, "dtype", np.float32))
    if dtype.kind not in "biuf":
        raise ImageTypeError(f"images of type {dtype} cannot be segmented; use integer or floating-point pixels")
    description = model.description
    if output == "instances" and description.instance_rule.method == "none":
        raise OptionsError(
            f"the model {description.name!r} does not separate objects; ask for classes or probabilities"
        )
    layout = infer_layout(
        tuple(image.shape), in_channels=description.config.in_channels, channel_axis=channel_axis, rgb=rgb
    )
    torch_device = resolve_device(settings.device)
    started = time.perf_counter()
    stack = layout.stack_shape
    height, width = layout.plane_shape
    n_planes = layout.n_planes
    n_classes = description.config.n_classes
    want_probs = output == "probabilities" or keep_probabilities
    check_whole_image(layout, description.config, output_kind=output, keep_probabilities=keep_probabilities)
    if stitch_threshold is not None:
        check_stitching(stitch_threshold, axis=stitch_axis, stack_shape=stack)
    indices = list(layout.plane_indices())
    middle = indices[len(indices) // 2]
    fit = fit_notice(layout, layout.plane(image, middle), model)
    if fit is not None:
        yield Progress(Stage.NOTICE, message=fit)
    share = 1 / (n_planes + 1) if settings.diameter == "auto" else 0.0
    scale, reused = yield from within(
        choose_scale_job(
            layout.plane(image, middle),
            model,
            setting=settings.diameter,
            device=torch_device,
            pixel_size=pixel_size,
            **settings.plane_keywords(),
        ),
        start=0.0,
        stop=share,
    )
    if scale.source == "fallback":
        yield Progress(Stage.NOTICE, message=scale.note, data={"object_scale": scale.to_dict()})
    probabilities = np.zeros((*stack, n_classes, height, width), np.float32) if want_probs else None
    labels: np.ndarray | None = None
    if output != "probabilities":
        labels = np.zeros((*stack, height, width), np.uint8 if output == "classes" else np.uint32)
    n_objects = 0
    for i, index in enumerate(indices):
        if index == middle and reused is not None:
            outputs = reused  # the estimating pass was this plane at this scale
        else:
            outputs = yield from within(
                plane_outputs_job(
                    layout.plane(image, index),
                    model,
                    factor=scale.factor,
                    device=torch_device,
                    plane_index=i,
                    n_planes=n_planes,
                    **settings.plane_keywords(),
                ),
                start=share,
                stop=1.0,
            )
        if probabilities is not None:
            probabilities[index] = outputs.probabilities()
        if output == "classes":
            labels[index] = outputs.labels("classes")  # type: ignore[index]
        elif output == "instances":
            plane_labels = outputs.labels("instances")
            count = int(plane_labels.max(initial=0))
            if count:
                plane_labels = np.where(plane_labels > 0, plane_labels + n_objects, 0)
            labels[index] = plane_labels  # type: ignore[index]
            n_objects += count
        yield Progress(
            Stage.PLANE,
            done=1,
            total=1,
            plane=i,
            n_planes=n_planes,
            message=f"plane {i + 1}/{n_planes} done",
            span=(share, 1.0),
        )
    if labels is not None and output == "instances":
        labels = labels.astype(smallest_label_dtype(n_objects), copy=False)
        if stitch_threshold is not None:
            labels = stitch_planes(labels, threshold=stitch_threshold, axis=stitch_axis)
            n_objects = int(labels.max(initial=0))
    return SegmentationResult(
        output=output,
        labels=labels,
        probabilities=probabilities,
        class_names=list(description.class_names),
        n_objects=n_objects,
        device=str(torch_device),
        seconds=time.perf_counter() - started,
        object_scale=scale,
        precision=str(compute_dtype(torch_device, amp=settings.amp)).removeprefix("torch."),
    )


def segment(image: Any, model: SegmentationModel, /, **options: Any) -> SegmentationResult:
    """Segment an image; :func:`segment_job` run to the end.

    Examples
    --------
    >>> from napari_unet.core import new_model
    >>> model = new_model(depth=2, base_features=4, padding="same")
    >>> result = segment(np.random.default_rng(0).random((40, 30)), model, output_kind="classes", device="cpu")
    >>> result.labels.shape, result.labels.dtype.name
    ((40, 30), 'uint8')
    """
    return run_job(segment_job(image, model, **options))
