"""Blocks of a plane too large to segment in one piece.

A large plane is cut into blocks. Each block has a *core*, the pixels it
writes into the output (cores partition the plane and line up with the
output's chunks, so blocks can be written by separate processes), and an
*extended* region, the core plus a margin, which is predicted and labelled
so that objects cut by the core's border are seen whole (up to the margin)
and can be matched with the neighbour's view of them. Pairs of neighbouring
blocks compare their labels in a *zone* along their shared border (see
:func:`napari_unet.core.blockwise.label_merge.matching_pairs`).

Example
-------
>>> blocks = block_grid((5000, 3000), block_size=2048, margin=128, step=16)
>>> len(blocks), blocks[0].core, blocks[0].extended
(6, (slice(0, 2048, None), slice(0, 2048, None)), (slice(0, 2176, None), slice(0, 2176, None)))
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_unet.core.inference.options import OptionsError
from napari_unet.core.inference.tiling import Region
from napari_unet.core.network.geometry import round_up


@dataclass(frozen=True)
class Block:
    """One block of a plane.

    Attributes
    ----------
    index : tuple of int
        (row, column) of the block in the grid.
    core : tuple of slice
        Pixels of the plane this block writes.
    extended : tuple of slice
        Pixels of the plane this block predicts and labels: the core and a
        margin around it, clipped to the plane.
    """

    index: tuple[int, int]
    core: Region
    extended: Region

    @property
    def core_in_extended(self) -> Region:
        """The core, in coordinates of the extended region."""
        return relative(self.core, self.extended)


def block_grid(plane_shape: tuple[int, int], /, *, block_size: int, margin: int, step: int = 1) -> list[Block]:
    """Cut a (Y, X) plane into blocks, row by row.

    Parameters
    ----------
    plane_shape : tuple of int
        Size of the plane.
    block_size : int
        Side of a block's core; a multiple of ``step``.
    margin : int
        Pixels predicted around each core; rounded up to a multiple of
        ``step``.
    step : int
        The network's down-sampling factor: every extended region starts on
        a multiple of it, so its prediction equals a whole-plane pass.

    Returns
    -------
    list of Block
    """
    if len(plane_shape) != 2 or min(plane_shape) < 1:
        raise ValueError(f"a plane must be 2-D and non-empty, got shape {tuple(plane_shape)}")
    if block_size < 1 or block_size % step:
        raise OptionsError(f"the block size must be a positive multiple of {step}, got {block_size}")
    if margin < 0:
        raise OptionsError(f"the margin cannot be negative, got {margin}")
    margin = round_up(margin, step)
    height, width = plane_shape
    blocks = []
    for row, y0 in enumerate(range(0, height, block_size)):
        for col, x0 in enumerate(range(0, width, block_size)):
            y1, x1 = min(y0 + block_size, height), min(x0 + block_size, width)
            core = (slice(y0, y1), slice(x0, x1))
            extended = (
                slice(max(0, y0 - margin), min(height, y1 + margin)),
                slice(max(0, x0 - margin), min(width, x1 + margin)),
            )
            blocks.append(Block((row, col), core, extended))
    return blocks


def neighbours(blocks: list[Block], /) -> list[tuple[Block, Block]]:
    """Pairs of blocks that touch along an edge or at a corner, each pair once."""
    by_index = {b.index: b for b in blocks}
    pairs = []
    for block in blocks:
        row, col = block.index
        for d_row, d_col in ((0, 1), (1, -1), (1, 0), (1, 1)):
            other = by_index.get((row + d_row, col + d_col))
            if other is not None:
                pairs.append((block, other))
    return pairs


def comparison_zone(a: Block, b: Block, /, *, margin: int) -> Region:
    """Where two neighbours compare their labels: within ``margin // 2`` of both cores.

    The zone lies inside both extended regions (and the plane); in it each block sees at
    least half the margin of context on either side of the border, so the
    two labellings of an object cut by the border agree there.
    """
    half = margin // 2
    zone = []
    for ca, cb, ea, eb in zip(a.core, b.core, a.extended, b.extended):
        start = max(ca.start - half, cb.start - half, ea.start, eb.start)
        stop = min(ca.stop + half, cb.stop + half, ea.stop, eb.stop)
        zone.append(slice(start, max(start, stop)))
    return (zone[0], zone[1])


def relative(inner: Region, outer: Region, /) -> Region:
    """``inner`` (plane coordinates) in coordinates of ``outer``, which contains it."""
    return (
        slice(inner[0].start - outer[0].start, inner[0].stop - outer[0].start),
        slice(inner[1].start - outer[1].start, inner[1].stop - outer[1].start),
    )
