"""From what a user painted to training samples: the core side of Fine-tune.

Two ways of annotating are understood (see ``docs/how-to/annotate.md``):

``"scribbles"``
    A labels layer where 0 means *not annotated*, 1 means background and
    ``k`` means class ``k - 1`` (for the three-class nuclei scheme: 2 =
    interior, 3 = boundary). Unpainted pixels carry no gradient.
``"corrections"``
    A corrected instance segmentation (the Segment result after painting,
    erasing and filling): every non-zero value is one object, 0 is
    background, and all pixels of the reviewed planes or region are ground
    truth. For models without an object scheme, the values are classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from napari_unet.core.inference.layout import infer_layout
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.training.annotations import (
    IGNORE,
    AnnotationError,
    TrainingTarget,
    instance_classes,
    targets_from_instances,
    targets_from_scribbles,
    targets_from_semantic,
)
from napari_unet.core.training.corrections import object_corrections
from napari_unet.core.training.held_back import hold_back_band, hold_back_planes
from napari_unet.core.training.loop import TrainingSample, TrainingSettingsError, mistake_weights

AnnotationMode = Literal["scribbles", "corrections"]


def samples_from_arrays(
    image: Any,
    labels: np.ndarray,
    model: SegmentationModel,
    /,
    *,
    mode: AnnotationMode = "corrections",
    channel_axis: int | None = None,
    rgb: bool = False,
    planes: Sequence[tuple[int, ...]] | None = None,
    reviewed: np.ndarray | None = None,
    previous: np.ndarray | None = None,
    mistake_weight: float = 1.0,
    name: str = "image",
) -> list[TrainingSample]:
    """Training samples from an image and its painted labels.

    Parameters
    ----------
    image : array-like
        The image as napari holds it (2-D, RGB, multichannel, stacks).
    labels : numpy.ndarray
        Painted labels, shaped like the image without its channel axis.
    model : SegmentationModel
        The model to be fine-tuned (for channels, classes and scheme).
    mode : {"scribbles", "corrections"}
        How to read ``labels`` (see the module docstring).
    channel_axis, rgb
        As for :func:`napari_unet.core.segment`.
    planes : sequence of tuple, optional
        Stack indices to use; by default every plane that has annotation.
    reviewed : numpy.ndarray of bool, optional
        ``corrections`` only: pixels the user reviewed (same shape as
        ``labels``); others are ignored. Default: all pixels of the chosen
        planes.
    previous : numpy.ndarray, optional
        The model's earlier result (same shape as ``labels``); annotated
        pixels that disagree with it get ``mistake_weight`` times the weight.
    mistake_weight : float
        See ``previous``.
    name : str
        Prefix of the samples' names.

    Returns
    -------
    list of TrainingSample
        One per annotated plane.

    Raises
    ------
    ValueError
        If the shapes do not match or nothing is annotated; the message says
        what to do.
    """
    config = model.config
    layout = infer_layout(tuple(image.shape), in_channels=config.in_channels, channel_axis=channel_axis, rgb=rgb)
    expected = (*layout.stack_shape, *layout.plane_shape)
    labels = np.asarray(labels)
    if labels.shape != expected:
        raise AnnotationError(
            f"the labels have shape {labels.shape} but the image needs {expected}; "
            "paint into a labels layer made for this image (e.g. the Segment result)"
        )
    if labels.dtype.kind not in "biu":
        raise AnnotationError(f"labels must be integers, got {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise AnnotationError("labels must not be negative")
    for extra, what in ((reviewed, "reviewed mask"), (previous, "previous result")):
        if extra is not None and np.shape(extra) != expected:
            raise AnnotationError(f"the {what} has shape {np.shape(extra)}, expected {expected}")
    indices = (
        list(planes)
        if planes is not None
        else [
            idx
            for idx in layout.plane_indices()
            if labels[idx].any() or mode == "corrections" and reviewed is not None and reviewed[idx].any()
        ]
    )
    rule = model.description.instance_rule
    samples = []
    for idx in indices:
        plane_labels = labels[idx]
        plane_reviewed = None if reviewed is None else np.asarray(reviewed[idx], bool)
        if mode == "scribbles":
            if not plane_labels.any():
                continue
            target = targets_from_scribbles(plane_labels, n_classes=config.n_classes)
            instances = None
        elif rule.method == "seeded_watershed" and config.n_classes == 3:
            target = targets_from_instances(plane_labels, annotated=plane_reviewed)
            instances = plane_labels if plane_reviewed is None else np.where(plane_reviewed, plane_labels, 0)
        else:
            if plane_labels.size and plane_labels.max() >= config.n_classes:
                raise AnnotationError(
                    f"label value {int(plane_labels.max())} is not a class of this model "
                    f"({', '.join(config_names(model))}); use values 0..{config.n_classes - 1}"
                )
            target = targets_from_semantic(plane_labels, n_classes=config.n_classes)
            if plane_reviewed is not None:
                target = TrainingTarget(
                    np.where(plane_reviewed, target.classes, IGNORE),
                    np.where(plane_reviewed, target.weights, 0).astype(np.float32),
                )
            instances = None
        if not target.annotated.any():
            continue
        prev_classes = prev = corrected = None
        if previous is not None:
            prev = np.asarray(previous[idx])
            if mode == "corrections" and rule.method == "seeded_watershed" and config.n_classes == 3:
                prev_classes = instance_classes(prev)
            else:
                prev_classes = prev.astype(np.int64)
            if instances is not None:
                corrected = object_corrections(instances, prev, target.annotated)
            else:
                corrected = target.annotated & (prev_classes != target.classes)
            if mistake_weight != 1.0:
                target = mistake_weights(target, prev_classes, factor=mistake_weight)
        plane = np.asarray(_materialise(layout.plane(image, idx)))
        label = f"{name}[{','.join(map(str, idx))}]" if idx else name
        samples.append(
            TrainingSample(
                plane,
                target,
                instances=instances,
                name=label,
                corrected=corrected,
                previous=prev,
                source=name,
                plane=tuple(idx),
            )
        )
    if not samples:
        raise AnnotationError(
            "nothing is annotated: paint labels (scribbles: 1 = background, 2.. = classes) "
            "or correct a Segment result and mark it as reviewed"
        )
    return samples


def config_names(model: SegmentationModel) -> list[str]:
    """Class names with their values, e.g. ``["0 background", "1 interior"]``."""
    return [f"{i} {n}" for i, n in enumerate(model.description.class_names)]


def _materialise(plane: Any) -> np.ndarray:
    block = plane[:, :]
    if hasattr(block, "compute"):
        block = block.compute()
    return np.asarray(block)


def split_validation(
    samples: Sequence[TrainingSample], /, *, fraction: float = 0.2, seed: int = 0
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Hold back part of the annotation to check that fine-tuning does no harm.

    See :mod:`napari_unet.core.training.held_back` for how the held-back
    region is chosen: never where the user corrected the model, never cutting
    an object, and not at all when too few objects would remain to judge.

    Returns
    -------
    train, validation : list of TrainingSample
        The validation samples carry their ``region``.
    """
    if not 0 < fraction < 1:
        raise TrainingSettingsError("the validation fraction must be between 0 and 1")
    samples = list(samples)
    if len(samples) >= 3:
        return hold_back_planes(samples, fraction=fraction, seed=seed)
    train, val = [], []
    for s in samples:
        kept, held = hold_back_band(s, fraction=fraction)
        train.append(kept)
        if held is not None:
            val.append(held)
    return train, val
