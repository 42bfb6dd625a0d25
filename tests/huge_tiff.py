"""A small file that expands to a huge image: one compressed tile of zeros, the others empty (sparse)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import tifffile

#: 300,000 x 300,000 uint16 pixels: 168 GiB once read, a 1 MB file.
HUGE_SHAPE = (300_000, 300_000)


def huge_compressed_tiff(path: Path, shape: tuple[int, int] = HUGE_SHAPE, *, tile: int = 1024) -> Path:
    """Write a zlib-compressed, tiled BigTIFF of ``shape`` zeros (uint16) in well under a second.

    All tiles but the first have no bytes, which TIFF readers (tifffile included)
    read as zeros, so the file holds little more than its tile offsets.
    """
    encoded = zlib.compress(np.zeros((tile, tile), np.uint16).tobytes())
    n_tiles = -(-shape[0] // tile) * -(-shape[1] // tile)
    tifffile.imwrite(
        path,
        (encoded if i == 0 else b"" for i in range(n_tiles)),
        shape=shape,
        dtype=np.uint16,
        tile=(tile, tile),
        compression="zlib",
        bigtiff=True,
    )
    return path
