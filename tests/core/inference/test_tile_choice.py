"""CPU tile sizes chosen for the engine's speed: fewest seconds, every tile within Cancel's second."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core import load_named_model, new_model, segment
from napari_unet.core.inference.engine import EngineCache
from napari_unet.core.inference.options import InferenceOptions
from napari_unet.core.inference.tile_choice import CANCEL_SECONDS, choose_cpu_tile, speed_profile
from napari_unet.core.inference.tiling import tile_grid
from napari_unet.core.network.unet import UNetConfig

NUCLEI = UNetConfig(depth=4, base_features=16, padding="same", norm="batch", n_classes=3)


def _seconds(extent, config, shape, engine, speed):
    grid = tile_grid(extent, config, tile_shape=shape)
    pixels = grid.input_shape[0] * grid.input_shape[1]
    return len(grid.tiles) * pixels / (speed * 1e6 * speed_profile(engine).relative_speed(pixels)), grid


def test_an_image_that_fits_one_tile_is_one_tile():
    shape = choose_cpu_tile((512, 512), NUCLEI, engine="torch", speed_mpx_s=4.0)
    grid = tile_grid((512, 512), NUCLEI, tile_shape=shape)
    assert len(grid.tiles) == 1 and grid.input_shape == (608, 608)


@pytest.mark.parametrize("engine", ["torch", "openvino"])
@pytest.mark.parametrize("extent", [(2048, 2048), (4096, 1000), (700, 5000)])
@pytest.mark.parametrize("speed", [1.0, 4.0, 15.0])
def test_the_choice_is_as_fast_as_any_square_tile_and_each_tile_meets_the_cancel_second(engine, extent, speed):
    shape = choose_cpu_tile(extent, NUCLEI, engine=engine, speed_mpx_s=speed)
    chosen, grid = _seconds(extent, NUCLEI, shape, engine, speed)
    tile_pixels = grid.input_shape[0] * grid.input_shape[1]
    assert tile_pixels <= speed * 1e6 * CANCEL_SECONDS
    for side in range(256, 4097, 64):
        other, other_grid = _seconds(extent, NUCLEI, (side, side), engine, speed)
        if other_grid.input_shape[0] * other_grid.input_shape[1] <= speed * 1e6 * CANCEL_SECONDS:
            assert chosen <= other * 1.0001, (side, other_grid.input_shape)


def test_pytorch_keeps_tiles_near_its_fast_size_and_openvino_takes_large_ones():
    torch_shape = choose_cpu_tile((4096, 4096), NUCLEI, engine="torch", speed_mpx_s=10.0)
    openvino_shape = choose_cpu_tile((4096, 4096), NUCLEI, engine="openvino", speed_mpx_s=10.0)
    assert max(torch_shape) <= 700
    assert min(openvino_shape) >= 1500


def test_memory_limit_and_a_slow_first_guess_make_tiles_smaller():
    fast = choose_cpu_tile((4096, 4096), NUCLEI, engine="openvino", speed_mpx_s=20.0)
    first_guess = choose_cpu_tile((4096, 4096), NUCLEI, engine="openvino")
    limited = choose_cpu_tile((4096, 4096), NUCLEI, engine="openvino", speed_mpx_s=20.0, max_pixels=500_000)
    assert first_guess[0] * first_guess[1] < fast[0] * fast[1]
    assert limited[0] * limited[1] <= 500_000


def test_segment_records_the_speed_and_keeps_its_tiles_for_the_same_image():
    model = load_named_model("nuclei")
    image = np.random.default_rng(0).normal(100, 20, (700, 900)).astype(np.float32)
    cache = EngineCache()
    options = InferenceOptions(device="cpu", engine="torch", engine_cache=cache, diameter="model")
    first = segment(image, model, output_kind="probabilities", options=options).probabilities
    assert cache.speed("torch", torch.float32) is not None
    second = segment(image, model, output_kind="probabilities", options=options).probabilities
    third = segment(image, model, output_kind="probabilities", options=options).probabilities
    np.testing.assert_array_equal(second, third)  # the same cut once the speed is known
    # and the first call (a guessed speed) agrees to float32 rounding: tiles are seamless
    np.testing.assert_allclose(first, second, atol=1e-5)


def test_valid_networks_and_given_tile_sizes_are_left_as_they_were(tiny_model):
    valid = new_model(depth=2, base_features=4, padding="valid")
    image = np.random.default_rng(1).random((300, 300)).astype(np.float32)
    a = segment(image, valid, output_kind="probabilities", device="cpu").probabilities
    b = segment(image, valid, output_kind="probabilities", device="cpu", tile_size=128).probabilities
    np.testing.assert_allclose(a, b, atol=1e-5)
    given = segment(image, tiny_model, output_kind="probabilities", device="cpu", tile_size=96).probabilities
    chosen = segment(image, tiny_model, output_kind="probabilities", device="cpu").probabilities
    np.testing.assert_allclose(given, chosen, atol=1e-5)
