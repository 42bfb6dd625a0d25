"""InferenceOptions: one checked, frozen set of settings, and the shorthand keywords that build it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_unet.core import InferenceOptions, UserError, segment
from napari_unet.core.inference.engine import EngineCache
from napari_unet.core.inference.options import OptionsError, inference_options


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"device": "gpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ({"tile_size": 0}, "tile_size must be a whole number of at least 1"),
        ({"tile_size": 128.0}, "tile_size must be a whole number"),
        ({"batch_size": 0}, "batch_size must be a whole number of at least 1 (or None for automatic), got 0"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"amp": "yes"}, "amp must be True or False"),
        ({"engine": "tensorrt"}, "engine must be one of auto, torch, openvino, got 'tensorrt'"),
        ({"engine_cache": {}}, "engine_cache must be an EngineCache"),
    ],
)
def test_bad_settings_are_refused_with_what_is_accepted(settings, message):
    with pytest.raises(OptionsError) as raised:
        InferenceOptions(**settings)
    assert message in str(raised.value)
    assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)


def test_settings_are_normalised_and_frozen():
    options = InferenceOptions(device=" CUDA:1 ", tile_size=np.int64(256), batch_size=np.int32(2))
    assert (options.device, options.tile_size, options.batch_size) == ("cuda:1", 256, 2)
    assert type(options.tile_size) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = "cpu"  # type: ignore[misc]


def test_the_cache_is_carried_but_not_compared():
    cache = EngineCache()
    with_cache = InferenceOptions(device="cpu", engine_cache=cache)
    assert with_cache == InferenceOptions(device="cpu")
    assert with_cache.with_cache().engine_cache is cache
    assert with_cache.without_cache().engine_cache is None
    fresh = InferenceOptions().with_cache().engine_cache
    assert isinstance(fresh, EngineCache) and fresh is not InferenceOptions().with_cache().engine_cache


def test_shorthand_keywords_build_options_but_not_beside_them():
    assert inference_options(device="cpu", tile_size=None) == InferenceOptions(device="cpu")
    given = InferenceOptions(tile_size=64)
    assert inference_options(given, tile_size=None) is given
    with pytest.raises(TypeError, match="either options= or device=, not both"):
        inference_options(given, device="cpu")
    with pytest.raises(TypeError, match="unexpected keyword argument 'tiles'"):
        inference_options(tiles=3)


def test_segment_takes_options_keywords_and_the_old_output_name(tiny_model):
    image = np.random.default_rng(0).random((40, 36)).astype(np.float32)
    by_options = segment(image, tiny_model, output_kind="classes", options=InferenceOptions(device="cpu", tile_size=32))
    by_keywords = segment(image, tiny_model, output_kind="classes", device="cpu", tile_size=32)
    by_old_name = segment(image, tiny_model, output="classes", device="cpu", tile_size=32)
    assert by_options.output == by_old_name.output == "classes"
    np.testing.assert_array_equal(by_options.labels, by_keywords.labels)
    np.testing.assert_array_equal(by_options.labels, by_old_name.labels)
    with pytest.raises(TypeError, match="output_kind= only"):
        segment(image, tiny_model, output_kind="classes", output="instances", device="cpu")
    with pytest.raises(TypeError, match="not both"):
        segment(image, tiny_model, options=InferenceOptions(), device="cpu")
