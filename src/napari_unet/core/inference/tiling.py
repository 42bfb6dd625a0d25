"""The overlap-tile strategy: which pixels each network pass reads and writes.

A plane is cut into tiles. Each tile is three things (as in CSBDeep's
``tile_iterator``): the region of the image it *reads* (with context around
it; context outside the image is filled by mirroring, as in the paper), the
part of the network output it *keeps*, and where that part is *written* in
the result.

``valid`` networks (unpadded convolutions) are seamless by construction:
every output pixel sees exactly the context it would see in one whole-image
pass, and tiles start on multiples of the network's down-sampling factor, so
max-pooling windows line up too. The result does not depend on the tile size.

``same`` networks (padded convolutions) see zero padding at tile edges, which
changes every output pixel within the receptive-field radius of an edge.
Tiles therefore read a margin of at least that radius (real neighbouring
context, or mirrored context at the image border) and keep only their
centre, so the zero padding never reaches a kept pixel: no seams, and the
same result as one pass over the mirror-padded image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.network.geometry import (
    halo,
    largest_valid_input,
    output_size,
    round_down,
    round_up,
    same_margin,
    valid_input_size,
)
from napari_unet.core.network.unet import UNetConfig

Region = tuple[slice, slice]


@dataclass(frozen=True)
class Tile:
    """One network pass.

    Attributes
    ----------
    read : tuple of slice
        Region of the mirror-extended image to read (may start below 0 or
        end past the image).
    keep : tuple of slice
        Region of the network's output that is used.
    write : tuple of slice
        Where the kept region goes in the output plane (inside the plane).
    """

    read: Region
    keep: Region
    write: Region


@dataclass(frozen=True)
class TileGrid:
    """All tiles of one plane, and how to combine them.

    Attributes
    ----------
    tiles : list of Tile
        In row-major order.
    input_shape : tuple of int
        Network input size of every tile (all tiles have the same size, so
        they batch).
    output_shape : tuple of int
        Network output size of every tile.
    """

    tiles: list[Tile]
    input_shape: tuple[int, int]
    output_shape: tuple[int, int]


def _axis_valid(extent: int, config: UNetConfig, want_input: int) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """Tiles along one axis for a valid network.

    Returns (read_start, keep_len, write_start, write_stop) per tile, the input
    size and the output size.
    """
    step = config.downsampling
    h = halo(config)
    # the whole axis in one pass needs an output of at least `extent`
    whole = valid_input_size(config, extent)
    size = min(largest_valid_input(config, max(want_input, 1)), whole)
    # an output shorter than the down-sampling factor cannot advance on the grid
    size = max(size, valid_input_size(config, step))
    out = output_size(config, size)
    assert out is not None
    stride = out if size == whole else round_down(out, step)
    stride = max(stride, 1)
    if size < whole and stride >= step:
        # as many tiles as the largest size needs, but each only as large as
        # an even share of the axis: less computed twice
        share = -(-extent // -(-extent // stride))
        balanced = valid_input_size(config, round_up(share, step))
        if balanced < size:
            size = balanced
            out = output_size(config, size)
            assert out is not None
            stride = round_down(out, step)
    tiles = []
    start = 0
    while start < extent:
        stop = min(start + stride, extent)
        tiles.append((start - h, stop - start, start, stop))
        start += stride
    return tiles, size, out


def _axis_same(
    extent: int, config: UNetConfig, want_input: int, margin: int
) -> tuple[list[tuple[int, int, int, int]], int]:
    """Tiles along one axis for a same network: (read_start, keep_start, write_start, write_stop)."""
    step = config.downsampling
    margin = round_up(margin, step)
    whole = round_up(extent + 2 * margin, step)
    # a tile advances by its size minus both margins: keep that at least 2 margins
    # (or one step) so small requested tiles do not explode into thousands
    smallest = 2 * margin + max(step, 2 * margin)
    size = min(max(round_down(want_input, step), smallest), whole)
    stride = size - 2 * margin
    if size < whole:
        # as many tiles as this size needs, each only as large as an even
        # share of the axis (on the pooling grid): less computed twice
        share = -(-extent // -(-extent // stride))
        stride = max(round_up(share, step), smallest - 2 * margin)
        size = stride + 2 * margin
    tiles = []
    start = 0
    while start < extent:
        stop = min(start + stride, extent)
        tiles.append((start - margin, margin, start, stop))
        start += stride
    return tiles, size


def tile_grid(
    plane_shape: tuple[int, int],
    config: UNetConfig,
    /,
    *,
    tile_shape: tuple[int, int] = (512, 512),
    margin: int | None = None,
) -> TileGrid:
    """Cut a plane into tiles for a network.

    Parameters
    ----------
    plane_shape : tuple of int
        (Y, X) size of the plane.
    config : UNetConfig
        The network's architecture.
    tile_shape : tuple of int
        Largest network *input* size per tile (memory grows with it). Tiles
        are shrunk when one tile covers the plane with less.
    margin : int, optional
        ``same`` networks only: context read on each side of the part a tile
        keeps. Defaults to :func:`same_margin`, which makes tiles seamless;
        a smaller margin is faster but lets zero padding show at seams.

    Returns
    -------
    TileGrid

    Notes
    -----
    Each tile keeps a part of its output whose size is a multiple of the
    down-sampling factor (``2**(depth-1)``), so all tiles read from
    positions on the same pooling grid as one whole-image pass. Kept parts
    partition the plane: every output pixel is written exactly once.
    """
    if len(plane_shape) != 2 or min(plane_shape) < 1:
        raise ValueError(f"a plane must be 2-D and non-empty, got shape {tuple(plane_shape)}")
    if config.padding == "valid":
        ys, in_h, out_h = _axis_valid(plane_shape[0], config, tile_shape[0])
        xs, in_w, out_w = _axis_valid(plane_shape[1], config, tile_shape[1])
        tiles = [
            Tile(
                read=(slice(ry, ry + in_h), slice(rx, rx + in_w)),
                keep=(slice(0, ky), slice(0, kx)),
                write=(slice(wy0, wy1), slice(wx0, wx1)),
            )
            for ry, ky, wy0, wy1 in ys
            for rx, kx, wx0, wx1 in xs
        ]
        return TileGrid(tiles, (in_h, in_w), (out_h, out_w))
    if margin is None:
        margin = same_margin(config)
    ys, in_h = _axis_same(plane_shape[0], config, tile_shape[0], margin)
    xs, in_w = _axis_same(plane_shape[1], config, tile_shape[1], margin)
    tiles = [
        Tile(
            read=(slice(ry, ry + in_h), slice(rx, rx + in_w)),
            keep=(slice(ky, ky + (wy1 - wy0)), slice(kx, kx + (wx1 - wx0))),
            write=(slice(wy0, wy1), slice(wx0, wx1)),
        )
        for ry, ky, wy0, wy1 in ys
        for rx, kx, wx0, wx1 in xs
    ]
    return TileGrid(tiles, (in_h, in_w), (in_h, in_w))


def mirror_indices(start: int, stop: int, n: int, /) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``0..n-1`` by mirroring.

    Mirroring does not repeat the edge pixel (like ``numpy.pad`` with
    ``mode="reflect"``) and works for any distance outside the image; an
    axis of length 1 repeats its only pixel.

    Examples
    --------
    >>> mirror_indices(-3, 7, 4).tolist()
    [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    """
    idx = np.arange(start, stop)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n - 2
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def read_mirrored(plane: Any, region: Region, /) -> np.ndarray:
    """Read ``region`` of a (Y, X, ...) plane, mirroring outside its bounds.

    Only the bounding box of the pixels needed is read, so a dask or zarr
    plane is never loaded whole.

    Returns
    -------
    numpy.ndarray
        Shape (region height, region width, ...).
    """
    h, w = plane.shape[:2]
    rows = mirror_indices(region[0].start, region[0].stop, h)
    cols = mirror_indices(region[1].start, region[1].stop, w)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    block = plane[r0:r1, c0:c1]
    if hasattr(block, "compute"):
        block = block.compute()
    block = np.asarray(block)
    return block[np.ix_(rows - r0, cols - c0)]
