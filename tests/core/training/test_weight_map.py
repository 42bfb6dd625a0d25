"""Tests for napari_unet.core.training.weight_map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from napari_unet.core.training.weight_map import class_balance_weights, unet_weight_map


def _random_instances(shape: tuple[int, int], n: int, *, seed: int) -> np.ndarray:
    """Random overlapping disks with non-consecutive IDs."""
    rng = np.random.default_rng(seed)
    instances = np.zeros(shape, dtype=np.int32)
    for i in range(n):
        radius = int(rng.integers(2, 7))
        centre = tuple(int(c) for c in rng.integers(0, shape[0], size=2))
        rr, cc = disk(centre, radius, shape=shape)
        instances[rr, cc] = 7 * i + 3
    return instances


def _brute_force(instances: np.ndarray, *, w0: float, sigma: float) -> np.ndarray:
    """The paper's formula with full-image distance transforms to every object."""
    ids = [i for i in np.unique(instances) if i > 0]
    weights = class_balance_weights((instances > 0).astype(int)).astype(np.float64)
    if len(ids) >= 2:
        distances = np.sort(np.stack([ndi.distance_transform_edt(instances != i) for i in ids]), axis=0)
        border = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
        weights += np.where(instances == 0, border, 0.0)
    return weights


# --- class_balance_weights ---------------------------------------------------


def test_class_balance_gives_each_class_the_same_total_weight():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2], size=(40, 50), p=[0.7, 0.25, 0.05])
    weights = class_balance_weights(labels)
    totals = [weights[labels == c].sum() for c in (0, 1, 2)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)
    assert weights.mean() == pytest.approx(1.0, rel=1e-6)
    assert weights.dtype == np.float32


def test_class_balance_ignores_masked_and_negative_pixels():
    labels = np.array([[0, 0, 0, 1], [1, -1, 2, 2]])
    ignore = np.zeros(labels.shape, dtype=bool)
    ignore[1, 2] = True  # one of the two class-2 pixels
    weights = class_balance_weights(labels, ignore_mask=ignore)
    assert weights[1, 1] == 0 and weights[1, 2] == 0
    # 6 annotated pixels, 3 classes: class 0 has 3, class 1 has 2, class 2 has 1
    np.testing.assert_allclose(weights[0, :3], 6 / (3 * 3))
    np.testing.assert_allclose(weights[[0, 1], [3, 0]], 6 / (3 * 2))
    np.testing.assert_allclose(weights[1, 3], 6 / (3 * 1))
    annotated = (labels >= 0) & ~ignore
    assert weights[annotated].mean() == pytest.approx(1.0)


def test_class_balance_all_ignored_is_all_zero():
    weights = class_balance_weights(np.full((4, 4), -1))
    assert weights.shape == (4, 4)
    assert not weights.any()


def test_class_balance_rejects_float_labels():
    with pytest.raises(TypeError):
        class_balance_weights(np.zeros((3, 3), dtype=np.float32))


# --- unet_weight_map ------------------------------------------------------------


def test_two_squares_one_pixel_apart_hand_computed():
    w0, sigma = 10.0, 5.0
    instances = np.zeros((7, 9), dtype=np.uint16)
    instances[2:5, 1:4] = 4  # 3x3 square
    instances[2:5, 5:8] = 9  # 3x3 square, one column of background in between
    weights = unet_weight_map(instances, w0=w0, sigma=sigma)
    assert weights.dtype == np.float32 and weights.shape == instances.shape
    # 63 pixels, 18 foreground, 45 background, 2 classes
    w_fg, w_bg = 63 / (2 * 18), 63 / (2 * 45)
    # gap pixel: d1 = d2 = 1
    assert weights[3, 4] == pytest.approx(w_bg + w0 * np.exp(-4 / (2 * sigma**2)), rel=1e-6)
    # just above the gap: d1 = d2 = sqrt(2)
    assert weights[1, 4] == pytest.approx(w_bg + w0 * np.exp(-8 / (2 * sigma**2)), rel=1e-6)
    # left of the left square: d1 = 1, d2 = 5
    assert weights[3, 0] == pytest.approx(w_bg + w0 * np.exp(-36 / (2 * sigma**2)), rel=1e-6)
    # object pixels keep their class weight only
    np.testing.assert_allclose(weights[instances > 0], w_fg, rtol=1e-6)


@pytest.mark.parametrize(("w0", "sigma"), [(10.0, 5.0), (3.0, 2.0), (20.0, 8.0)])
def test_matches_brute_force_reference(w0, sigma):
    instances = _random_instances((64, 64), 25, seed=1)
    instances[60:, 60:] = 3  # the first object's ID again: one object in two pieces
    weights = unet_weight_map(instances, w0=w0, sigma=sigma)
    expected = _brute_force(instances, w0=w0, sigma=sigma)
    # terms below 1e-4 are dropped by design
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=2e-4)
    assert (weights - class_balance_weights((instances > 0).astype(int))).max() > 1  # a real border term


def test_single_object_has_no_border_term():
    instances = np.zeros((30, 30), dtype=np.int64)
    instances[5:12, 8:20] = 42
    weights = unet_weight_map(instances, w0=10, sigma=5)
    np.testing.assert_array_equal(weights, class_balance_weights((instances > 0).astype(int)))


def test_no_objects_gives_uniform_weights():
    weights = unet_weight_map(np.zeros((5, 6), dtype=np.int32))
    np.testing.assert_array_equal(weights, np.ones((5, 6), dtype=np.float32))


def test_ignored_pixels_get_zero_and_do_not_count_for_class_balance():
    instances = np.zeros((7, 9), dtype=np.int32)
    instances[2:5, 1:4] = 1
    instances[2:5, 5:8] = 2
    ignore = np.zeros(instances.shape, dtype=bool)
    ignore[:, 8] = True
    instances[0, 0] = -1  # negative also means unannotated
    weights = unet_weight_map(instances, ignore_mask=ignore)
    assert not weights[:, 8].any() and weights[0, 0] == 0
    # 63 - 7 - 1 = 55 annotated pixels, 18 of them foreground
    np.testing.assert_allclose(weights[instances > 0], 55 / (2 * 18), rtol=1e-6)
    assert weights[3, 4] == pytest.approx(55 / (2 * 37) + 10 * np.exp(-4 / 50), rel=1e-6)


def test_custom_class_weights_are_used_as_given():
    instances = np.zeros((7, 9), dtype=np.int32)
    instances[2:5, 1:4] = 1
    instances[2:5, 5:8] = 2
    class_weights = np.full(instances.shape, 0.5, dtype=np.float32)
    weights = unet_weight_map(instances, class_weights=class_weights, w0=2.0, sigma=1.0)
    assert weights[0, 0] == pytest.approx(0.5)  # far from both objects
    assert weights[3, 4] == pytest.approx(0.5 + 2.0 * np.exp(-2.0))
    np.testing.assert_allclose(weights[instances > 0], 0.5)
    assert class_weights[3, 4] == 0.5  # input not modified


def test_w0_zero_gives_class_weights_only():
    instances = _random_instances((32, 32), 8, seed=2)
    np.testing.assert_array_equal(unet_weight_map(instances, w0=0), class_balance_weights((instances > 0).astype(int)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigma": 0.0},
        {"w0": -1.0},
        {"class_weights": np.ones((3, 3))},
        {"ignore_mask": np.ones((2, 2), dtype=bool)},
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        unet_weight_map(np.zeros((4, 4), dtype=int), **kwargs)


def test_rejects_float_instances():
    with pytest.raises(TypeError):
        unet_weight_map(np.zeros((4, 4)))


# --- properties (hypothesis) ---------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    n=st.integers(0, 6),
    unannotated=st.floats(0.0, 0.5),
)
def test_weight_map_properties_hold_for_any_instances(seed, height, width, n, unannotated):
    rng = np.random.default_rng(seed)
    instances = np.zeros((height, width), np.int32)
    for i in range(n):
        rr, cc = disk(
            tuple(int(c) for c in rng.integers(0, max(height, width), 2)),
            int(rng.integers(1, 6)),
            shape=instances.shape,
        )
        instances[rr, cc] = 5 * i + 2
    ignore = rng.random(instances.shape) < unannotated

    weights = unet_weight_map(instances, ignore_mask=ignore)

    assert weights.shape == instances.shape and weights.dtype == np.float32
    assert np.isfinite(weights).all() and (weights >= 0).all()
    assert (weights[ignore] == 0).all()  # unannotated pixels carry no weight
    balance = class_balance_weights((instances > 0).astype(int), ignore_mask=ignore)
    inside = (instances > 0) & ~ignore
    np.testing.assert_allclose(weights[inside], balance[inside], rtol=1e-6)  # no border term inside objects
    outside = (instances == 0) & ~ignore
    assert (weights[outside] >= balance[outside] - 1e-6).all()  # the border term only adds
    # object IDs are names: renaming them changes nothing
    ids = [i for i in np.unique(instances) if i > 0]
    renamed = np.zeros_like(instances)
    for new, old in zip(rng.permutation(len(ids)) + 100, ids):
        renamed[instances == old] = new
    np.testing.assert_allclose(unet_weight_map(renamed, ignore_mask=ignore), weights, rtol=1e-6)
