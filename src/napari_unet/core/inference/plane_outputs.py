"""One plane predicted at the model's object scale, and its results on the image's grid.

:func:`plane_outputs_job` is what every segmentation path runs per plane (or
per block of a plane): it resamples the window it needs by the scale factor
(:mod:`~napari_unet.core.inference.object_scale`), predicts it tile by tile,
and returns a :class:`PlaneOutputs` that turns the probabilities into labels
*at the model's scale* (so the model's pixel rules, such as the minimum object
size, apply at the size it was trained at) and maps them back to the image's
grid: labels by nearest neighbour, probabilities linearly. At a factor of 1
nothing is resampled and the results are those of a plain pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from skimage.segmentation import expand_labels

from napari_unet.core.inference.predict import predict_plane_job
from napari_unet.core.inference.resample import (
    resample_image,
    resample_labels,
    resample_probabilities,
    scaled_shape,
)
from napari_unet.core.inference.tiling import Region
from napari_unet.core.network.geometry import halo, same_margin
from napari_unet.core.network.instances import (
    InstanceRule,
    class_map,
    foreground_mask,
    labels_from_probabilities,
    relabel_consecutive,
)
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import Job

__all__ = ["PlaneOutputs", "plane_outputs_job"]


@dataclass
class PlaneOutputs:
    """Class probabilities of one plane (or window) predicted at some scale.

    Attributes
    ----------
    probabilities_at_scale : numpy.ndarray
        (K, Y', X') float32 as the network gave them.
    shape : tuple of int
        (Y, X) of the window on the image's grid.
    crop : tuple of slice
        The part of the window the caller asked for (its region).
    factor : float
        The scale the window was predicted at (1: the image's own grid).
    model : SegmentationModel
        Whose instance rule makes the labels.
    """

    probabilities_at_scale: np.ndarray
    shape: tuple[int, int]
    crop: Region
    factor: float
    model: SegmentationModel
    _labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def labels(self, kind: str) -> np.ndarray:
        """Instances (IDs 1..N) or classes of the region on the image's grid.

        At a factor of 1 these are the labels of the probabilities. Otherwise
        objects are separated at the model's scale (its pixel rules apply
        there) and take their IDs to the image's grid by nearest neighbour,
        while which pixels belong to an object (and which class each pixel
        is) follows the linearly resampled probabilities, so boundaries stay
        smooth instead of following the coarser of the two grids.
        """
        if kind not in self._labels:
            self._labels[kind] = self._make(kind, self.model.description.instance_rule)
        return self._labels[kind]

    def instances_under(self, rule: InstanceRule, /) -> np.ndarray:
        """The instances another ``rule`` would give (not kept: :meth:`labels` stays the model's)."""
        if rule == self.model.description.instance_rule:
            return self.labels("instances")
        return self._make("instances", rule)

    def probabilities(self) -> np.ndarray:
        """(K, Y, X) probabilities of the region on the image's grid."""
        return self._probabilities_here()[(slice(None), *self.crop)]

    def _probabilities_here(self) -> np.ndarray:
        if "probabilities" not in self._labels:
            self._labels["probabilities"] = resample_probabilities(self.probabilities_at_scale, self.shape)
        return self._labels["probabilities"]

    def _make(self, kind: str, rule: InstanceRule) -> np.ndarray:
        if self.factor == 1.0:
            return labels_from_probabilities(self.probabilities_at_scale, kind=kind, rule=rule)[self.crop]
        probabilities = self._probabilities_here()
        classes = class_map(probabilities)
        if kind == "classes":
            return classes[self.crop]
        at_scale = labels_from_probabilities(self.probabilities_at_scale, kind="instances", rule=rule)
        ids = resample_labels(at_scale, self.shape)
        foreground = foreground_mask(probabilities, rule, classes=classes)
        ids[~foreground] = 0
        if np.any(foreground & (ids == 0)):  # foreground on this grid that the nearest sample missed
            ids = expand_labels(ids, distance=math.ceil(1 / self.factor) + 1)
            ids[~foreground] = 0
        return relabel_consecutive(ids[self.crop])


def plane_outputs_job(
    plane: Any,
    model: SegmentationModel,
    /,
    *,
    factor: float = 1.0,
    device: torch.device,
    stats: np.ndarray | None = None,
    region: Region | None = None,
    **plane_keywords: Any,
) -> Job[PlaneOutputs]:
    """Predict one (Y, X, C) plane, or a region of it, at ``factor`` times its size.

    Parameters
    ----------
    plane : array-like
        (Y, X, C), as :func:`~napari_unet.core.inference.predict.predict_plane_job` takes.
    model : SegmentationModel
        The model.
    factor : float
        Resampling factor (model's object size / image's object size); 1 predicts the plane as it is.
    device : torch.device
        Where to run.
    stats : numpy.ndarray, optional
        The normalisation statistics of the whole plane (computed from it if omitted).
    region : tuple of slice, optional
        Only this (Y, X) window; at another scale its context (the network's
        reach, in image pixels) is read around it and resampled with it.
    **plane_keywords
        Tile size, batch size, mixed precision, engine, engine cache, plane index.

    Yields
    ------
    Progress
        The tiles of the (resampled) window.

    Returns
    -------
    PlaneOutputs
    """
    if stats is None:
        stats = model.description.normalization.statistics(plane)
    height, width = (int(n) for n in plane.shape[:2])
    if factor == 1.0:
        probs = yield from predict_plane_job(plane, model, device=device, stats=stats, region=region, **plane_keywords)
        shape = probs.shape[1:] if region is None else _extent(region)
        return PlaneOutputs(probs, (int(shape[0]), int(shape[1])), (slice(None), slice(None)), 1.0, model)
    window, crop = _window_with_context(region, (height, width), model, factor)
    pixels = np.asarray(plane[window], dtype=np.float32)
    scaled = resample_image(pixels, scaled_shape(pixels.shape[:2], factor))
    probs = yield from predict_plane_job(scaled, model, device=device, stats=stats, **plane_keywords)
    return PlaneOutputs(probs, (pixels.shape[0], pixels.shape[1]), crop, factor, model)


def _extent(region: Region) -> tuple[int, int]:
    return (int(region[0].stop - region[0].start), int(region[1].stop - region[1].start))


def _window_with_context(
    region: Region | None, plane_shape: tuple[int, int], model: SegmentationModel, factor: float
) -> tuple[Region, Region]:
    """The window to read (region plus the network's reach in image pixels) and the region within it."""
    if region is None:
        whole = (slice(0, plane_shape[0]), slice(0, plane_shape[1]))
        return whole, (slice(None), slice(None))
    config = model.config
    reach = same_margin(config) if config.padding == "same" else halo(config)
    context = math.ceil(reach / factor) + 2
    window, crop = [], []
    for axis, part in enumerate(region):
        start = max(0, int(part.start) - context)
        stop = min(plane_shape[axis], int(part.stop) + context)
        window.append(slice(start, stop))
        crop.append(slice(int(part.start) - start, int(part.stop) - start))
    return (window[0], window[1]), (crop[0], crop[1])
