"""Input normalisation: statistics on known arrays, odd values, dask planes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from core_helpers import CountingArray
from napari_unet.core.network import normalization as normalization_module
from napari_unet.core.network.normalization import Normalization, apply_normalization


def _plane(values, channels=1):
    """A (Y, X, C) plane from a 1-D array of values (one row)."""
    arr = np.asarray(values, dtype=np.float64).reshape(1, -1, 1)
    return np.repeat(arr, channels, axis=2)


def test_percentile_maps_low_and_high_percentiles_to_zero_and_one():
    plane = _plane(np.arange(101))  # the p-th percentile of 0..100 is p
    stats = Normalization("percentile", 10, 90).statistics(plane)
    np.testing.assert_allclose(stats, [[10.0, 80.0]])
    out = apply_normalization(plane, stats)
    assert out[0, 10, 0] == pytest.approx(0.0) and out[0, 90, 0] == pytest.approx(1.0)


def test_percentile_default_is_one_to_99_8():
    stats = Normalization().statistics(_plane(np.arange(1001)))
    np.testing.assert_allclose(stats, [[10.0, 988.0]])


def test_percentile_is_per_channel():
    plane = np.stack([np.arange(101.0), 10 * np.arange(101.0)], axis=-1)[None]
    stats = Normalization("percentile", 0, 100).statistics(plane)
    np.testing.assert_allclose(stats, [[0.0, 100.0], [0.0, 1000.0]])


def test_range_uses_fixed_values_whatever_the_image():
    stats = Normalization("range", 0, 255).statistics(_plane([7, 9, 11]))
    np.testing.assert_allclose(stats, [[0.0, 255.0]])
    out = apply_normalization(np.array([[[0], [255], [51]]], np.uint8), stats)
    np.testing.assert_allclose(out.ravel(), [0.0, 1.0, 0.2], atol=1e-6)


def test_zscore_gives_zero_mean_unit_std():
    values = np.random.default_rng(0).normal(5, 3, size=1000)
    plane = _plane(values)
    stats = Normalization("zscore").statistics(plane)
    np.testing.assert_allclose(stats, [[values.mean(), values.std()]])
    out = apply_normalization(plane, stats)
    assert abs(float(out.mean())) < 1e-4 and float(out.std()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("kind", ["percentile", "zscore"])
def test_constant_image_does_not_divide_by_zero(kind):
    plane = _plane(np.full(50, 42.0))
    stats = Normalization(kind).statistics(plane)
    assert stats[0, 1] == 1.0
    out = apply_normalization(plane, stats)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.0)


@pytest.mark.parametrize("kind", ["percentile", "zscore"])
def test_nan_and_inf_are_ignored_in_statistics(kind):
    clean = np.arange(101.0)
    dirty = np.concatenate([clean, [np.nan, np.inf, -np.inf, np.nan]])
    norm = Normalization(kind, 5, 95)
    np.testing.assert_allclose(norm.statistics(_plane(dirty)), norm.statistics(_plane(clean)))


def test_all_nan_plane_gives_neutral_statistics():
    stats = Normalization().statistics(_plane([np.nan] * 10))
    np.testing.assert_array_equal(stats, [[0.0, 1.0]])


def test_apply_normalization_turns_non_finite_pixels_into_zero():
    tile = np.array([[[np.nan], [np.inf], [-np.inf], [3.0]]], np.float32)
    out = apply_normalization(tile, np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(out.ravel(), [0.0, 0.0, 0.0, 1.0])
    assert out.dtype == np.float32


def test_apply_normalization_does_not_change_its_input():
    tile = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    before = tile.copy()
    apply_normalization(tile, np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(tile, before)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float16, np.bool_])
def test_statistics_of_any_dtype_are_float64(dtype):
    plane = (np.arange(60).reshape(6, 10, 1) % 7).astype(dtype)
    stats = Normalization().statistics(plane)
    assert stats.dtype == np.float64 and np.isfinite(stats).all()


def test_uint16_extremes_do_not_overflow():
    plane = np.array([[[0], [65535]] * 50], np.uint16).reshape(10, 10, 1)
    stats = Normalization("percentile", 0, 100).statistics(plane)
    np.testing.assert_allclose(stats, [[0.0, 65535.0]])


def test_dask_plane_matches_numpy():
    data = np.random.default_rng(1).random((200, 300, 2)).astype(np.float32)
    norm = Normalization()
    np.testing.assert_allclose(norm.statistics(da.from_array(data, chunks=(64, 64, 2))), norm.statistics(data))


def test_large_dask_plane_is_subsampled(monkeypatch):
    monkeypatch.setattr(normalization_module, "_PERCENTILE_SAMPLE", 10_000)
    data = np.random.default_rng(2).random((400, 500, 1)).astype(np.float32)  # 200 000 px: step 5
    norm = Normalization("percentile", 2, 98)
    stats = norm.statistics(da.from_array(data, chunks=(100, 100, 1)))
    np.testing.assert_allclose(stats, norm.statistics(data[::5, ::5]))
    np.testing.assert_allclose(stats, norm.statistics(data), atol=0.01)  # close to the full-image statistics


def test_large_plane_reads_only_a_subsample(monkeypatch):
    monkeypatch.setattr(normalization_module, "_PERCENTILE_SAMPLE", 10_000)
    data = np.random.default_rng(3).random((400, 500, 1)).astype(np.float32)
    source = CountingArray(data)
    Normalization().statistics(source)
    assert source.reads and max(source.reads) <= 2 * 10_000


@pytest.mark.parametrize(
    "options, message",
    [
        ({"kind": "minmax"}, "percentile, range or zscore"),
        ({"kind": "range", "low": 5, "high": 5}, "high > low"),
        ({"kind": "percentile", "low": -1, "high": 50}, "percentiles"),
        ({"kind": "percentile", "low": 1, "high": 101}, "percentiles"),
    ],
)
def test_impossible_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Normalization(**options)


def test_dict_round_trip():
    norm = Normalization("range", 0, 4095)
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_dict_with_unknown_keys_is_refused():
    with pytest.raises(ValueError, match="unknown normalisation settings"):
        Normalization.from_dict({"kind": "zscore", "low": 0, "high": 1, "clip": True})
