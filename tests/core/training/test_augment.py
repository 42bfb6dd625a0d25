"""Tests for napari_unet.core.training.augment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_unet.core.training.augment import augment_sample, elastic_deformation_field

GEOMETRY_ONLY = {"intensity": False}
NOTHING = {"elastic": False, "flips": False, "rotate90": False, "intensity": False}


def _blobs(shape: tuple[int, int], *, seed: int, n_classes: int = 3) -> np.ndarray:
    """Smooth random regions of classes 0..n_classes-1, int64."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.random(shape), 4)
    edges = np.quantile(noise, np.linspace(0, 1, n_classes + 1)[1:-1])
    return np.digitize(noise, edges).astype(np.int64)


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a square array (over its first two axes)."""
    out = []
    for k in range(4):
        r = np.rot90(a, k, axes=(0, 1))
        out += [r, np.flip(r, axis=0)]
    return out


# --- elastic_deformation_field ----------------------------------------------------


def test_field_shape_and_dtype():
    field = elastic_deformation_field((30, 17), rng=np.random.default_rng(0))
    assert field.shape == (2, 30, 17)
    assert field.dtype == np.float32
    assert np.abs(field).max() > 0


def test_field_with_sigma_zero_is_zero():
    assert not elastic_deformation_field((12, 9), rng=np.random.default_rng(0), sigma=0).any()


def test_field_passes_through_the_coarse_random_vectors():
    sigma, grid = 10.0, 3
    coarse = np.random.default_rng(5).normal(0, sigma, size=(2, grid, grid))
    field = elastic_deformation_field((21, 41), rng=np.random.default_rng(5), grid=grid, sigma=sigma)
    # lattice points sit at rows 0, 10, 20 and columns 0, 20, 40
    np.testing.assert_allclose(field[:, ::10, ::20], coarse, rtol=1e-5, atol=1e-4)


def test_field_is_smooth_and_has_the_requested_spread():
    rng = np.random.default_rng(1)
    fields = np.stack([elastic_deformation_field((64, 64), rng=rng, sigma=10.0) for _ in range(200)])
    corner_std = fields[:, :, 0, 0].std()
    assert 8.0 < corner_std < 12.0  # corners are lattice points: N(0, 10)
    steepest = max(np.abs(np.diff(fields, axis=axis)).max() for axis in (2, 3))
    assert steepest < 5.0  # neighbouring pixels move together (lattice spacing is 32 px)


@pytest.mark.parametrize("kwargs", [{"grid": 1}, {"sigma": -1.0}])
def test_field_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        elastic_deformation_field((8, 8), rng=np.random.default_rng(0), **kwargs)


# --- augment_sample ----------------------------------------------------------------


def test_zero_sigma_elastic_is_identity():
    image = np.random.default_rng(0).random((20, 30, 2), dtype=np.float32)
    labels = _blobs((20, 30), seed=0)
    weights = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    out = augment_sample(
        image,
        labels,
        weights,
        rng=np.random.default_rng(2),
        flips=False,
        rotate90=False,
        intensity=False,
        elastic_sigma=0.0,
    )
    for before, after in zip((image, labels, weights), out, strict=True):
        np.testing.assert_array_equal(after, before)
        assert after.dtype == before.dtype


def test_all_off_returns_copies_equal_to_input():
    image = np.random.default_rng(0).random((9, 9, 1), dtype=np.float32)
    labels = _blobs((9, 9), seed=1)
    out_image, out_labels = augment_sample(image, labels, rng=np.random.default_rng(0), **NOTHING)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)


def test_same_seed_same_result_other_seed_other_result():
    image = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    labels = _blobs((32, 32), seed=0)
    a = augment_sample(image, labels, rng=np.random.default_rng(7))
    b = augment_sample(image, labels, rng=np.random.default_rng(7))
    c = augment_sample(image, labels, rng=np.random.default_rng(8))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("seed", range(5))
def test_image_and_labels_stay_aligned(seed):
    labels = _blobs((48, 48), seed=seed)
    labels[:6, :6] = -1  # unannotated corner
    image = labels.astype(np.float32)[..., np.newaxis]
    out_image, out_labels = augment_sample(image, labels, rng=np.random.default_rng(seed), **GEOMETRY_ONLY)
    agreement = (np.rint(out_image[..., 0]) == out_labels).mean()
    assert agreement > 0.95
    assert (out_labels != labels).mean() > 0.05  # something did move


def test_extra_maps_follow_the_same_geometry():
    rng = np.random.default_rng(3)
    image = rng.random((40, 40, 2), dtype=np.float32)
    labels = _blobs((40, 40), seed=3)
    weights = image[..., 1].copy()  # float map: same interpolation as the image
    mask = labels.copy()  # integer map: same nearest-neighbour as the labels
    bool_mask = labels == 1
    out_image, out_labels, out_weights, out_mask, out_bool = augment_sample(
        image, labels, weights, mask, bool_mask, rng=np.random.default_rng(4), **GEOMETRY_ONLY
    )
    np.testing.assert_array_equal(out_weights, out_image[..., 1])
    np.testing.assert_array_equal(out_mask, out_labels)
    assert out_bool.dtype == bool
    np.testing.assert_array_equal(out_bool, out_labels == 1)
    assert not np.array_equal(out_labels, labels)


def test_flips_and_rotations_are_exact():
    image = np.arange(36, dtype=np.float32).reshape(6, 6, 1)
    labels = np.arange(36).reshape(6, 6)
    seen = set()
    for seed in range(20):
        out_image, out_labels = augment_sample(
            image, labels, rng=np.random.default_rng(seed), elastic=False, intensity=False
        )
        matches = [i for i, d in enumerate(_dihedral(labels)) if np.array_equal(out_labels, d)]
        assert len(matches) == 1
        np.testing.assert_array_equal(out_image, _dihedral(image)[matches[0]])
        seen.add(matches[0])
    assert len(seen) > 4  # the transforms really are random


def test_non_square_rotation_keeps_shape():
    image = np.random.default_rng(0).random((10, 16, 1), dtype=np.float32)
    labels = _blobs((10, 16), seed=0)
    for seed in range(8):
        out_image, out_labels = augment_sample(image, labels, rng=np.random.default_rng(seed), elastic=False)
        assert out_image.shape == image.shape and out_labels.shape == labels.shape


def test_intensity_changes_only_the_image_and_keeps_its_order():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 16, 1)).astype(np.float32)
    labels = _blobs((16, 16), seed=0)
    weights = rng.random((16, 16)).astype(np.float32)
    out_image, out_labels, out_weights = augment_sample(
        image, labels, weights, rng=np.random.default_rng(1), elastic=False, flips=False, rotate90=False
    )
    assert not np.allclose(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_weights, weights)
    order = np.argsort(image, axis=None)
    assert np.all(np.diff(out_image.ravel()[order]) >= -1e-5)  # monotonic map


@pytest.mark.parametrize(
    "arrays",
    [
        (np.zeros((8, 8, 1), np.float32), np.zeros((8, 9), np.int64)),
        (np.zeros((8, 8, 1), np.float32), np.zeros((8, 8), np.int64), np.zeros((8, 7))),
        (np.zeros((8,), np.float32), np.zeros((8,), np.int64)),
    ],
)
def test_mismatched_shapes_raise(arrays):
    with pytest.raises(ValueError):
        augment_sample(*arrays, rng=np.random.default_rng(0))


def test_float_labels_raise():
    with pytest.raises(TypeError):
        augment_sample(np.zeros((8, 8, 1), np.float32), np.zeros((8, 8)), rng=np.random.default_rng(0))


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(4, 40),
    width=st.integers(4, 40),
    values=st.lists(st.integers(-1, 1000), min_size=1, max_size=5, unique=True),
    dtype=st.sampled_from([np.int8, np.uint16, np.int32, np.int64]),
    seed=st.integers(0, 2**32 - 1),
    sigma=st.floats(0.0, 20.0),
)
def test_labels_stay_integral_with_input_values(height, width, values, dtype, seed, sigma):
    info = np.iinfo(dtype)
    values = [v for v in values if info.min <= v <= info.max] or [0]
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array(values), size=(height, width)).astype(dtype)
    image = rng.random((height, width, 2), dtype=np.float32)
    out_image, out_labels = augment_sample(image, labels, rng=rng, elastic_sigma=sigma)
    assert out_labels.dtype == labels.dtype
    assert out_labels.shape == labels.shape and out_image.shape == image.shape
    assert out_image.dtype == np.float32
    assert set(np.unique(out_labels).tolist()) <= set(np.unique(labels).tolist())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(4, 32))
def test_float_extras_stay_within_input_range(seed, size):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 3.0, size=(size, size)).astype(np.float32)
    _, _, out_weights = augment_sample(
        np.zeros((size, size, 1), np.float32), np.zeros((size, size), np.int64), weights, rng=rng
    )
    # linear interpolation never leaves the range of the input
    assert out_weights.min() >= weights.min() - 1e-6
    assert out_weights.max() <= weights.max() + 1e-6


def test_degradation_blurs_or_adds_noise_to_some_images_only_and_never_moves_the_labels():
    image = np.zeros((48, 48, 1), np.float32)
    image[12:36, 12:36] = 1.0
    labels = (image[..., 0] > 0).astype(np.int64)
    changed = 0
    for seed in range(40):
        plain = augment_sample(image, labels, rng=np.random.default_rng(seed), elastic=False, intensity=False)
        worse = augment_sample(
            image, labels, rng=np.random.default_rng(seed), elastic=False, intensity=False, degrade=True
        )
        np.testing.assert_array_equal(plain[1], worse[1])
        again = augment_sample(
            image, labels, rng=np.random.default_rng(seed), elastic=False, intensity=False, degrade=True
        )
        np.testing.assert_array_equal(worse[0], again[0])  # seeded: reproducible
        if not np.array_equal(plain[0], worse[0]):
            changed += 1
            assert worse[0].dtype == np.float32 and np.isfinite(worse[0]).all()
    assert 8 <= changed <= 32  # each of blur and noise with probability 0.3: about half the patches


def test_zoom_stretches_each_axis_on_its_own_within_its_range_and_keeps_labels_on_the_image():
    image = np.zeros((64, 64, 1), np.float32)
    image[24:40, 24:40] = 1.0
    labels = (image[..., 0] > 0).astype(np.int64)
    off = {**NOTHING, "elastic": False}
    heights, widths = [], []
    for seed in range(30):
        out_image, out_labels = augment_sample(image, labels, rng=np.random.default_rng(seed), zoom=1.5, **off)
        assert (np.rint(out_image[..., 0]) == out_labels).mean() > 0.99
        rows, cols = np.flatnonzero(out_labels.any(axis=1)), np.flatnonzero(out_labels.any(axis=0))
        heights.append(len(rows))
        widths.append(len(cols))
        assert 0 < rows[0] and rows[-1] < 63  # about the centre: the object stays inside
    sides = np.array([heights, widths])
    assert sides.min() >= 16 / 1.5 - 1 and sides.max() <= 16 * 1.5 + 1
    assert sides.min() < 14 and sides.max() > 18  # both shrunk and stretched
    assert np.mean(np.abs(sides[0] - sides[1]) >= 2) > 0.3  # each axis its own factor
    unzoomed = augment_sample(image, labels, rng=np.random.default_rng(0), **off)
    np.testing.assert_array_equal(unzoomed[1], labels)


def test_zoom_below_one_raises():
    image = np.zeros((8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="zoom"):
        augment_sample(image, np.zeros((8, 8), np.int64), rng=np.random.default_rng(0), zoom=0.5)
