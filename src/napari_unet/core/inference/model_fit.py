"""Notices for images a model was not made for, said before its result is trusted.

Two cases are detected:

- a colour (RGB) image given to a model that reads one channel. It is
  converted to luminance, which is right for a fluorescence image saved as
  RGB, but a stained (H&E) or brightfield image has dark objects on a bright
  background, unlike the fluorescence images the shipped one-channel models
  learnt from;
- an image whose background, after the model's normalisation, lies far from
  the backgrounds of the model's training images
  (:attr:`~napari_unet.core.network.model_file.ModelDescription.background_intensity`):
  the nuclei model's training images have a median normalised intensity of
  0.01-0.07 (p10-p90), brightfield and H&E images about 0.93-1, so each of
  those val images gets the notice, as EM slices do; phase contrast given to a
  fluorescence model is not caught (``docs/performance.md#model-fit-notices``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from napari_unet.core.inference.layout import ImageLayout
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.normalization import apply_normalization

#: How far outside the training images' range (of median normalised intensity) an image must lie for a notice.
BACKGROUND_MARGIN = 0.3
#: Pixels read to measure a plane's median (a regular subsample of larger planes).
_SAMPLE_PIXELS = 65_536


def colour_notice(layout: ImageLayout, model: SegmentationModel, /) -> str | None:
    """A notice when an RGB image meets a one-channel model (None otherwise).

    Examples
    --------
    >>> from napari_unet.core import new_model
    >>> from napari_unet.core.inference.layout import infer_layout
    >>> model = new_model(depth=2, base_features=4, padding="same", name="nuclei")
    >>> colour_notice(infer_layout((30, 40, 3), in_channels=1, rgb=True), model)[:33]
    'the image is RGB colour but the m'
    >>> colour_notice(infer_layout((30, 40), in_channels=1), model) is None
    True
    """
    if not layout.to_gray:
        return None
    name = model.description.name
    return (
        f"the image is RGB colour but the model {name!r} reads one channel: it was converted to gray. "
        "Stained (H&E) or brightfield images are not what a fluorescence model knows: check the result, "
        "and fine-tune on a few corrected images of this kind"
    )


def median_intensity(plane: Any, model: SegmentationModel, /, *, stats: np.ndarray | None = None) -> float:
    """The median of a (Y, X, C) plane's first channel after the model's normalisation, clipped to 0-1.

    Parameters
    ----------
    plane : array-like
        (Y, X, C), as :func:`~napari_unet.core.inference.predict.predict_plane_job` takes.
    model : SegmentationModel
        Whose normalisation applies.
    stats : numpy.ndarray, optional
        The plane's normalisation statistics, when already computed.

    Returns
    -------
    float
        0 (dark background) to 1 (bright background).

    Examples
    --------
    >>> from napari_unet.core import new_model
    >>> model = new_model(depth=2, base_features=4, padding="same")
    >>> dark = np.zeros((64, 64, 1), np.float32); dark[:8, :8] = 100.0
    >>> median_intensity(dark, model), median_intensity(100.0 - dark, model)
    (0.0, 1.0)
    """
    h, w = plane.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / _SAMPLE_PIXELS))))
    sample = plane[::step, ::step]
    sample = np.asarray(sample.compute() if hasattr(sample, "compute") else sample)
    if stats is None:
        stats = model.description.normalization.statistics(sample)
    normalised = apply_normalization(sample, stats)[..., 0]
    return float(np.clip(np.median(normalised), 0.0, 1.0))


def intensity_range(values: Iterable[float], /) -> tuple[float, float] | None:
    """The 10th and 90th percentiles of per-image median intensities (None without any)."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        return None
    low, high = np.percentile(array, [10, 90])
    return round(float(low), 4), round(float(high), 4)


def background_notice(value: float, model: SegmentationModel, /) -> str | None:
    """A notice when an image's median intensity lies far outside the model's training images' range.

    Examples
    --------
    >>> from napari_unet.core import new_model
    >>> model = new_model(depth=2, base_features=4, padding="same", name="nuclei")
    >>> model.description.background_intensity = (0.01, 0.07)
    >>> background_notice(0.98, model)[:40]
    'the image has a much brighter background'
    >>> background_notice(0.2, model) is None
    True
    """
    known = model.description.background_intensity
    if known is None:
        return None
    low, high = known
    if low - BACKGROUND_MARGIN <= value <= high + BACKGROUND_MARGIN:
        return None
    brighter = value > high
    kind = (
        "brightfield, H&E, phase contrast or EM rather than fluorescence?"
        if brighter
        else "fluorescence rather than brightfield or phase contrast?"
    )
    return (
        f"the image has a much {'brighter' if brighter else 'darker'} background than the images the model "
        f"{model.description.name!r} learnt from (median intensity {value:.2f} after its normalisation, "
        f"theirs {low:.2f}-{high:.2f}): is it {kind} Check the result; choose a model for this kind of image "
        "or fine-tune on a few corrected ones"
    )


def fit_notice(
    layout: ImageLayout, plane: Any, model: SegmentationModel, /, *, stats: np.ndarray | None = None
) -> str | None:
    """The notice Segment gives before its result: the image's colour first, else its background; or None.

    Parameters
    ----------
    layout : ImageLayout
        The image's layout (whether it is converted to gray).
    plane : array-like
        The (Y, X, C) plane whose background is measured (a stack's middle
        plane); lazy arrays are read only where subsampled.
    model : SegmentationModel
        The model about to segment it.
    stats : numpy.ndarray, optional
        That plane's normalisation statistics, when already computed.
    """
    colour = colour_notice(layout, model)
    if colour is not None or model.description.background_intensity is None:
        return colour
    return background_notice(median_intensity(plane, model, stats=stats), model)
