"""Block grids for large images, and joining objects cut by block borders."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.blockwise.blocks import block_grid, comparison_zone, neighbours, relative
from napari_unet.core.blockwise.label_merge import LabelUnion, block_offsets, matching_pairs


@pytest.mark.parametrize(
    "shape, size, margin, step", [((100, 70), 32, 16, 4), ((64, 64), 64, 0, 1), ((33, 200), 16, 10, 8)]
)
def test_block_cores_tile_the_plane_exactly_once(shape, size, margin, step):
    blocks = block_grid(shape, block_size=size, margin=margin, step=step)
    cover = np.zeros(shape, np.int32)
    for block in blocks:
        cover[block.core] += 1
        # The extended region contains the core and starts on the network's grid.
        ext = block.extended
        assert ext[0].start <= block.core[0].start and ext[0].stop >= block.core[0].stop
        assert ext[1].start % step == 0 and ext[0].start % step == 0
        assert ext[0].stop <= shape[0] and ext[1].stop <= shape[1]
    assert (cover == 1).all()


def test_margin_is_rounded_up_to_the_down_sampling_factor():
    blocks = block_grid((256, 256), block_size=64, margin=10, step=8)
    inner = blocks[5]  # row 1, column 1: not clipped by the plane
    assert inner.index == (1, 1)
    assert inner.core[0].start - inner.extended[0].start == 16


def test_neighbours_include_diagonals_each_pair_once():
    blocks = block_grid((30, 30), block_size=10, margin=2)
    pairs = neighbours(blocks)
    keys = {(a.index, b.index) for a, b in pairs}
    assert len(pairs) == len(keys) == 12 + 8  # 12 edges and 8 corners in a 3 x 3 grid
    assert all((b, a) not in keys for a, b in keys)
    assert ((0, 1), (1, 0)) in keys  # the anti-diagonal


def test_comparison_zone_lies_in_both_extended_regions():
    blocks = block_grid((100, 100), block_size=40, margin=12, step=4)
    for a, b in neighbours(blocks):
        zone = comparison_zone(a, b, margin=12)
        for z, ea, eb in zip(zone, a.extended, b.extended):
            assert max(ea.start, eb.start) <= z.start <= z.stop <= min(ea.stop, eb.stop)
        assert (zone[0].stop - zone[0].start) * (zone[1].stop - zone[1].start) > 0


def test_relative_coordinates():
    assert relative((slice(10, 20), slice(5, 7)), (slice(8, 30), slice(0, 9))) == (slice(2, 12), slice(5, 7))


def test_block_grid_refuses_bad_geometry():
    with pytest.raises(ValueError, match="multiple of 8"):
        block_grid((100, 100), block_size=30, margin=0, step=8)
    with pytest.raises(ValueError, match="margin"):
        block_grid((100, 100), block_size=32, margin=-1)
    with pytest.raises(ValueError, match="2-D"):
        block_grid((0, 5), block_size=32, margin=0)


def test_matching_pairs_uses_the_smaller_object():
    a = np.array([[1, 1, 1, 1, 0, 2, 2]])
    b = np.array([[5, 5, 6, 6, 0, 0, 7]])  # object 1 seen split in two; 2 and 7 share one pixel of two
    pairs = matching_pairs(a, b).tolist()
    assert pairs == [[1, 5], [1, 6], [2, 7]]
    assert matching_pairs(a, np.zeros_like(a)).shape == (0, 2)
    with pytest.raises(ValueError, match="shape"):
        matching_pairs(a, b[:, :3])


def test_label_union_numbers_groups_contiguously():
    union = LabelUnion(6)
    union.join(np.array([[2, 5], [5, 6]]))
    table = union.final_ids(np.array([1, 2, 3, 5, 6]))  # 4 never written
    assert table.tolist() == [0, 1, 2, 3, 0, 2, 2]
    assert block_offsets([3, 0, 2]).tolist() == [0, 3, 3]
