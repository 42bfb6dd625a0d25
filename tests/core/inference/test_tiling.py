"""The overlap-tile strategy: tiled prediction equals one whole-image pass."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_helpers import CountingArray, tiny_model
from napari_unet.core import segment
from napari_unet.core.inference.tiling import mirror_indices, read_mirrored, tile_grid
from napari_unet.core.network.geometry import same_margin
from napari_unet.core.network.unet import UNetConfig, halo, output_size

WHOLE = 4096  # a tile size larger than every test image: one pass over the whole plane


def _probabilities(image, model, tile_size):
    return segment(image, model, output="probabilities", device="cpu", tile_size=tile_size).probabilities


@pytest.fixture(scope="module")
def valid_models():
    return {depth: tiny_model(padding="valid", depth=depth, base_features=4, seed=depth) for depth in (2, 3)}


# --- valid networks: seamless by construction --------------------------------------------------


#: Per depth: two sizes that cut the test images into several tiles, and one larger than them.
TILE_SIZES = {2: (30, 46, 200), 3: (60, 76, 200)}


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("shape", [(37, 53), (61, 29)])
def test_valid_network_tiled_equals_whole_image_for_three_tile_sizes(valid_models, depth, shape):
    model = valid_models[depth]
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    whole = _probabilities(image, model, WHOLE)
    for tile_size in TILE_SIZES[depth]:
        tiled = _probabilities(image, model, tile_size)
        assert np.abs(tiled - whole).max() < 1e-5, tile_size


@pytest.mark.parametrize("depth", [2, 3])
def test_valid_network_smallest_possible_tiles_equal_whole_image(valid_models, depth):
    model = valid_models[depth]
    image = np.random.default_rng(7).random((19, 13)).astype(np.float32)
    assert len(tile_grid(image.shape, model.config, tile_shape=(1, 1)).tiles) > 10
    whole = _probabilities(image, model, WHOLE)
    assert np.abs(_probabilities(image, model, 1) - whole).max() < 1e-5


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("shape", [(37, 53), (61, 29)])
def test_valid_network_test_tile_sizes_give_several_tiles_then_one(valid_models, depth, shape):
    # guards the test above: its small tile sizes do cut the images up
    config = valid_models[depth].config
    counts = [len(tile_grid(shape, config, tile_shape=(t, t)).tiles) for t in TILE_SIZES[depth]]
    assert counts[0] > 1 and counts[1] > 1 and counts[2] == 1
    assert len(tile_grid((37, 53), config, tile_shape=(100, 100)).tiles) == 1


@pytest.mark.parametrize("shape", [(5, 9), (1, 40), (40, 1), (1, 1), (3, 2)])
def test_valid_network_tiny_and_one_pixel_images_equal_whole_image(valid_models, shape):
    model = valid_models[3]
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    whole = _probabilities(image, model, WHOLE)
    assert whole.shape == (3, *shape)
    for tile_size in (1, 30, 50):
        assert np.abs(_probabilities(image, model, tile_size) - whole).max() < 1e-5, tile_size


@pytest.mark.parametrize("shape", [(97, 1), (1, 97)], ids=["one-pixel-wide", "one-pixel-tall"])
def test_valid_network_one_pixel_thin_image_in_many_tiles(valid_models, shape):
    model = valid_models[2]
    image = np.random.default_rng(3).random(shape).astype(np.float32)
    assert len(tile_grid(shape, model.config, tile_shape=(1, 1)).tiles) > 10
    whole = _probabilities(image, model, WHOLE)
    assert np.abs(_probabilities(image, model, 1) - whole).max() < 1e-5


def test_valid_probabilities_sum_to_one(valid_models):
    image = np.random.default_rng(4).random((37, 53)).astype(np.float32)
    probs = _probabilities(image, valid_models[2], 30)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


# --- same networks: no seams -----------------------------------------------------------------

#: Largest acceptable |tiled - whole| of probabilities of a randomly initialised ``same``
#: network. Tiles read the whole receptive field around what they keep, so the zero padding
#: at tile edges never reaches a kept pixel: only float rounding differs.
SEAM_BOUND = 1e-5


@pytest.mark.parametrize("depth,shape,tile", [(2, (97, 83), 64), (3, (97, 83), 64), (4, (230, 210), 192)])
def test_same_network_seam_error_is_bounded(depth, shape, tile):
    errors = []
    for seed in range(2):
        model = tiny_model(padding="same", depth=depth, base_features=4, seed=seed)
        image = np.random.default_rng(seed).random(shape).astype(np.float32)
        assert len(tile_grid(image.shape, model.config, tile_shape=(tile, tile)).tiles) > 4
        whole = _probabilities(image, model, WHOLE)
        tiled = _probabilities(image, model, tile)
        errors.append(float(np.abs(tiled - whole).max()))
    print(f"same network, depth {depth}: max |tiled - whole| = {max(errors):.4f} (bound {SEAM_BOUND})")
    assert max(errors) < SEAM_BOUND


def test_same_network_whole_image_pass_is_one_tile():
    config = UNetConfig(depth=3, padding="same", base_features=4)
    assert len(tile_grid((97, 83), config, tile_shape=(WHOLE, WHOLE)).tiles) == 1


def test_same_network_probabilities_sum_to_one():
    model = tiny_model(padding="same", depth=2)
    image = np.random.default_rng(5).random((50, 70)).astype(np.float32)
    np.testing.assert_allclose(_probabilities(image, model, 48).sum(axis=0), 1.0, atol=1e-5)


# --- tile_grid properties -----------------------------------------------------------------------

plane_shapes = st.tuples(st.integers(1, 160), st.integers(1, 160))
tile_sizes = st.tuples(st.integers(1, 300), st.integers(1, 300))
depths = st.integers(1, 5)


def _size(s: slice) -> int:
    return s.stop - s.start


@settings(max_examples=150, deadline=None)
@given(plane_shapes, tile_sizes, depths)
def test_valid_grid_writes_every_output_pixel_exactly_once(shape, tile, depth):
    grid = tile_grid(shape, UNetConfig(depth=depth, padding="valid"), tile_shape=tile)
    count = np.zeros(shape, np.int32)
    for t in grid.tiles:
        count[t.write] += 1
        assert all(0 <= s.start < s.stop <= n for s, n in zip(t.write, shape))
    assert (count == 1).all()


@settings(max_examples=150, deadline=None)
@given(plane_shapes, tile_sizes, depths)
def test_valid_grid_keeps_as_much_as_it_writes(shape, tile, depth):
    grid = tile_grid(shape, UNetConfig(depth=depth, padding="valid"), tile_shape=tile)
    for t in grid.tiles:
        assert [_size(s) for s in t.keep] == [_size(s) for s in t.write]
        assert all(0 <= s.start and s.stop <= n for s, n in zip(t.keep, grid.output_shape))


@settings(max_examples=150, deadline=None)
@given(plane_shapes, tile_sizes, depths)
def test_valid_grid_reads_the_halo_around_what_it_writes(shape, tile, depth):
    config = UNetConfig(depth=depth, padding="valid")
    grid = tile_grid(shape, config, tile_shape=tile)
    h = halo(config)
    for t in grid.tiles:
        for read, keep, write in zip(t.read, t.keep, t.write):
            # output pixel k of a tile is centred on input pixel k + halo
            assert read.start + h + keep.start == write.start


@settings(max_examples=150, deadline=None)
@given(plane_shapes, tile_sizes, depths)
def test_valid_grid_reads_start_on_one_pooling_grid(shape, tile, depth):
    config = UNetConfig(depth=depth, padding="valid")
    grid = tile_grid(shape, config, tile_shape=tile)
    step = config.downsampling
    residues = {(t.read[0].start % step, t.read[1].start % step) for t in grid.tiles}
    assert len(residues) == 1


@settings(max_examples=150, deadline=None)
@given(plane_shapes, tile_sizes, depths, st.sampled_from(["valid", "same"]))
def test_all_tiles_have_the_grid_input_shape(shape, tile, depth, padding):
    config = UNetConfig(depth=depth, padding=padding)
    grid = tile_grid(shape, config, tile_shape=tile)
    assert tuple(output_size(config, n) for n in grid.input_shape) == grid.output_shape
    for t in grid.tiles:
        assert (_size(t.read[0]), _size(t.read[1])) == grid.input_shape


@settings(max_examples=150, deadline=None)
@given(plane_shapes, tile_sizes, depths)
def test_same_grid_writes_every_pixel_once_far_from_tile_edges(shape, tile, depth):
    config = UNetConfig(depth=depth, padding="same")
    grid = tile_grid(shape, config, tile_shape=tile)
    margin = same_margin(config)
    count = np.zeros(shape, np.int32)
    for t in grid.tiles:
        assert [_size(s) for s in t.keep] == [_size(s) for s in t.write]
        assert all(0 <= s.start < s.stop <= n for s, n in zip(t.write, shape))
        # kept pixel k of a tile is input pixel k (same padding keeps positions)
        assert all(r.start + k.start == w.start for r, k, w in zip(t.read, t.keep, t.write))
        # zero padding at the tile edge cannot reach what is kept
        assert all(k.start >= margin and k.stop <= n - margin for k, n in zip(t.keep, grid.input_shape))
        count[t.write] += 1
    assert (count == 1).all()


@settings(max_examples=100, deadline=None)
@given(plane_shapes, tile_sizes, depths)
def test_same_grid_reads_start_on_one_pooling_grid(shape, tile, depth):
    config = UNetConfig(depth=depth, padding="same")
    grid = tile_grid(shape, config, tile_shape=tile)
    step = config.downsampling
    assert {(t.read[0].start % step, t.read[1].start % step) for t in grid.tiles} == {(0, 0)}


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (5,), (2, 3, 4)])
def test_tile_grid_refuses_empty_or_non_planar_shapes(shape):
    with pytest.raises(ValueError, match="2-D and non-empty"):
        tile_grid(shape, UNetConfig(depth=2))


# --- mirroring ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.data())
def test_mirror_indices_match_numpy_reflect_within_one_reflection(n, data):
    before = data.draw(st.integers(0, n - 1))
    after = data.draw(st.integers(0, n - 1))
    start = data.draw(st.integers(-before, n))
    stop = data.draw(st.integers(start, n + after))
    padded = np.pad(np.arange(n), (before, after), mode="reflect")
    expected = padded[start + before : stop + before]
    np.testing.assert_array_equal(mirror_indices(start, stop, n), expected)


def test_mirror_indices_match_numpy_reflect_far_outside():
    for n in (2, 3, 7):
        padded = np.pad(np.arange(n), (50, 50), mode="reflect")
        np.testing.assert_array_equal(mirror_indices(-50, n + 50, n), padded)


def test_mirror_indices_of_a_single_pixel_axis_repeat_it():
    assert mirror_indices(-5, 6, 1).tolist() == [0] * 11


def test_read_mirrored_matches_numpy_pad():
    plane = np.arange(7 * 5 * 2).reshape(7, 5, 2)
    padded = np.pad(plane, ((3, 4), (4, 2), (0, 0)), mode="reflect")
    out = read_mirrored(plane, (slice(-3, 11), slice(-4, 7)))
    np.testing.assert_array_equal(out, padded)


def test_read_mirrored_reads_only_the_bounding_box():
    data = np.arange(200 * 300, dtype=np.float32).reshape(200, 300, 1)
    plane = CountingArray(data, max_read=40 * 40)
    out = read_mirrored(plane, (slice(90, 120), slice(-5, 20)))
    np.testing.assert_array_equal(out, np.pad(data, ((0, 0), (5, 0), (0, 0)), mode="reflect")[90:120, 0:25])
    assert plane.reads == [30 * 20]


def test_read_mirrored_on_dask_computes_only_the_chunks_needed():
    data = np.random.default_rng(6).random((256, 256, 1)).astype(np.float32)
    source = CountingArray(data)
    plane = da.from_array(source, chunks=(32, 32, 1))
    out = read_mirrored(plane, (slice(100, 140), slice(-8, 24)))
    np.testing.assert_array_equal(out, np.pad(data, ((0, 0), (8, 0), (0, 0)), mode="reflect")[100:140, 0:32])
    assert sum(source.reads) <= 4 * 32 * 32  # two chunk rows x one chunk column (at most 2 x 2)
    assert sum(source.reads) < data.size / 10
