"""Data augmentation for training: the same random geometry for image and labels.

The U-Net paper trains from very few images thanks to smooth elastic
deformations; flips, 90-degree rotations, a random stretch of each axis and
intensity changes are added here.
Every geometric transform is applied identically to the image, the labels and
any extra per-pixel maps (weights, masks) so that they stay aligned.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Range of the random gamma (log-uniform), gain (log-uniform) and offset
#: (uniform, as a fraction of the image's intensity range).
_GAMMA_RANGE = (0.7, 1.4)
_GAIN_RANGE = (0.8, 1.25)
_OFFSET_RANGE = (-0.1, 0.1)
#: Degradations, each applied with probability :data:`DEGRADE_PROBABILITY`: Gaussian noise of up
#: to this fraction of the patch's standard deviation, and a Gaussian blur of up to this sigma (px).
_NOISE_MAX = 0.6
_BLUR_MAX = 1.5
DEGRADE_PROBABILITY = 0.3


def elastic_deformation_field(
    shape: tuple[int, int],
    /,
    *,
    rng: np.random.Generator,
    grid: int = 3,
    sigma: float = 10.0,
) -> np.ndarray:
    """Smooth random per-pixel displacements (the U-Net paper's scheme).

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the image to deform.
    rng : numpy.random.Generator
        Source of randomness.
    grid : int
        Random vectors are drawn on a coarse ``grid x grid`` lattice (>= 2)
        spanning the image corner to corner.
    sigma : float
        Standard deviation, in pixels, of every displacement component on the
        lattice (the paper uses 10).

    Returns
    -------
    numpy.ndarray
        Shape (2, H, W), float32: displacement along Y and along X of every
        pixel. All zeros when ``sigma`` is 0.

    Notes
    -----
    The coarse vectors are interpolated with a cubic spline (mirror boundary),
    which passes through the lattice values. The spline is separable, so the
    field is computed as ``A_y @ coarse @ A_x.T`` with small interpolation
    matrices instead of evaluating a 2-D spline at every pixel.

    Examples
    --------
    >>> import numpy as np
    >>> field = elastic_deformation_field((64, 48), rng=np.random.default_rng(0))
    >>> field.shape, field.dtype
    ((2, 64, 48), dtype('float32'))
    >>> bool(np.all(elastic_deformation_field((8, 8), rng=np.random.default_rng(0), sigma=0) == 0))
    True
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with H, W >= 1, got {shape}")
    if grid < 2:
        raise ValueError(f"grid must be at least 2, got {grid}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid)) if sigma > 0 else np.zeros((2, grid, grid))
    along_y = _cubic_upsampling_matrix(shape[0], grid)
    along_x = _cubic_upsampling_matrix(shape[1], grid)
    return np.stack([along_y @ c @ along_x.T for c in coarse]).astype(np.float32)


def augment_sample(
    image: np.ndarray,
    labels: np.ndarray,
    /,
    *extra: np.ndarray,
    rng: np.random.Generator,
    elastic: bool = True,
    flips: bool = True,
    rotate90: bool = True,
    intensity: bool = True,
    degrade: bool = False,
    elastic_sigma: float = 10.0,
    elastic_grid: int = 3,
    zoom: float = 1.0,
) -> tuple[np.ndarray, ...]:
    """Randomly transform one training sample, keeping all its parts aligned.

    Parameters
    ----------
    image : numpy.ndarray
        Shape (H, W, C) (or (H, W)), float: the normalised network input.
    labels : numpy.ndarray
        Shape (H, W), integer: classes, with e.g. -1 for unannotated pixels.
    *extra : numpy.ndarray
        Further per-pixel maps shaped (H, W, ...): float maps (loss weights)
        are interpolated linearly, integer and bool maps (masks) by nearest
        neighbour.
    rng : numpy.random.Generator
        Source of randomness; the same seed gives the same result.
    elastic : bool
        Apply a random elastic deformation
        (:func:`elastic_deformation_field`).
    flips : bool
        Flip up-down and left-right, each with probability 1/2.
    rotate90 : bool
        Rotate by a random multiple of 90 degrees (only by 0 or 180 degrees
        if the image is not square, so that shapes do not change).
    intensity : bool
        Random gamma, gain and offset, applied to ``image`` only.
    degrade : bool
        With probability :data:`DEGRADE_PROBABILITY` each, blur the image
        (sigma up to 1.5 px) and add Gaussian noise (up to 0.6 of its
        standard deviation): the next experiment's images may be noisier or
        less sharp than the training images.
    elastic_sigma : float
        Standard deviation of the coarse displacements, in pixels.
    elastic_grid : int
        Size of the coarse displacement lattice.
    zoom : float
        Stretch or shrink each axis by its own random factor, log-uniform in
        ``[1 / zoom, zoom]``, about the patch centre (1: never). Objects of
        the next experiment are larger or smaller, rounder or thinner than
        the annotated ones; a few annotated images show too few of them.

    Returns
    -------
    tuple of numpy.ndarray
        ``(image, labels, *extra)`` with unchanged shapes and dtypes; the
        image is float32.

    Notes
    -----
    Labels (and integer extras) are resampled by nearest neighbour, so they
    only ever contain values present in the input, including the ignore
    value; the image and float extras use linear interpolation. Pixels pulled
    in from outside the image are mirrored (``mode="reflect"``). Flips and
    rotations are exact (no interpolation); the zoom and the elastic
    deformation share one warp, so the image is interpolated once. Intensity changes are computed
    relative to the image's own intensity range, so they behave the same for
    any normalisation: gamma (log-uniform in [0.7, 1.4]) on the range mapped
    to [0, 1], then a gain (log-uniform in [0.8, 1.25]) and an offset of up to
    10 % of the range, shared by all channels.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((32, 32, 1), dtype=np.float32)
    >>> labels = (image[..., 0] > 0.5).astype(np.int64)
    >>> out_image, out_labels = augment_sample(image, labels, rng=np.random.default_rng(1))
    >>> out_image.shape, out_labels.dtype, set(np.unique(out_labels)) <= {0, 1}
    ((32, 32, 1), dtype('int64'), True)
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    spatial = image.shape[:2]
    if labels.shape != spatial:
        raise ValueError(f"labels have shape {labels.shape}, expected {spatial} to match the image")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if zoom < 1.0:
        raise ValueError(f"zoom must be at least 1 (1: none), got {zoom}")
    extra = tuple(np.asarray(e) for e in extra)
    for i, e in enumerate(extra):
        if e.shape[:2] != spatial:
            raise ValueError(f"extra array {i} has shape {e.shape}, expected (H, W, ...) = {spatial}")

    arrays = [image.astype(np.float32, copy=False), labels, *extra]
    if flips:
        for axis in (0, 1):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis=axis) for a in arrays]
    if rotate90:
        k = int(rng.integers(4)) if spatial[0] == spatial[1] else 2 * int(rng.integers(2))
        arrays = [np.rot90(a, k, axes=(0, 1)) for a in arrays]
    if elastic or zoom > 1.0:
        coords = np.indices(spatial, dtype=np.float64)
        if elastic:
            coords += elastic_deformation_field(spatial, rng=rng, grid=elastic_grid, sigma=elastic_sigma)
        if zoom > 1.0:
            coords += _zoom_shift(spatial, np.exp(rng.uniform(-np.log(zoom), np.log(zoom), size=2)))
        arrays = [_warp(a, coords) for a in arrays]
    out_image = np.ascontiguousarray(arrays[0], dtype=np.float32)
    if intensity:
        out_image = _random_intensity(out_image, rng=rng)
    if degrade:
        out_image = _random_degradation(out_image, rng=rng)
    return (out_image, *(np.ascontiguousarray(a) for a in arrays[1:]))


def _zoom_shift(shape: tuple[int, int], factors: np.ndarray) -> np.ndarray:
    """(2, H, W) displacements that magnify axis k by ``factors[k]`` about the centre (below 1: shrink)."""
    shift = np.zeros((2, *shape))
    for axis, (n, factor) in enumerate(zip(shape, factors, strict=True)):
        offsets = (np.arange(n) - (n - 1) / 2) * (1 / factor - 1)
        shift[axis] = offsets[:, None] if axis == 0 else offsets[None, :]
    return shift


def _cubic_upsampling_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix evaluating a cubic spline through n_in samples at n_out points.

    The samples sit at the first and last output point and evenly in between.
    """
    positions = np.linspace(0.0, n_in - 1, n_out)[np.newaxis]
    basis = np.eye(n_in)
    columns = [ndi.map_coordinates(basis[k], positions, order=3, mode="mirror") for k in range(n_in)]
    return np.stack(columns, axis=1)


def _warp(array: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Sample ``array`` (H, W, ...) at ``coords`` (2, H, W); float maps linearly, others nearest."""
    linear = np.issubdtype(array.dtype, np.floating)
    order = 1 if linear else 0
    work = array.astype(np.uint8) if array.dtype == bool else array
    flat = work.reshape(*work.shape[:2], -1)
    channels = [ndi.map_coordinates(flat[..., c], coords, order=order, mode="reflect") for c in range(flat.shape[-1])]
    return np.stack(channels, axis=-1).reshape(array.shape).astype(array.dtype, copy=False)


def _random_degradation(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Random blur and noise, each with probability :data:`DEGRADE_PROBABILITY` (draws always made: reproducible)."""
    blur, noise = rng.random(2) < DEGRADE_PROBABILITY
    sigma, level = rng.uniform(0.0, _BLUR_MAX), rng.uniform(0.0, _NOISE_MAX)
    if blur and sigma > 0:
        image = ndi.gaussian_filter(image, (sigma, sigma, 0) if image.ndim == 3 else sigma)
    if noise and level > 0:
        std = float(np.std(image[np.isfinite(image)])) if np.isfinite(image).any() else 0.0
        image = image + rng.normal(0.0, level * std, image.shape)
    return image.astype(np.float32, copy=False)


def _random_intensity(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Random gamma, gain and offset relative to the image's intensity range."""
    gamma = float(np.exp(rng.uniform(*np.log(_GAMMA_RANGE))))
    gain = float(np.exp(rng.uniform(*np.log(_GAIN_RANGE))))
    offset_fraction = float(rng.uniform(*_OFFSET_RANGE))
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return image
    low, high = float(finite.min()), float(finite.max())
    span = high - low
    if span > 0:
        scaled = np.clip((image - low) / span, 0.0, 1.0)
        image = low + span * scaled**gamma
    return ((image * gain) + offset_fraction * span).astype(np.float32)
