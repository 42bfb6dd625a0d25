"""How large the CPU's tiles are: fewest seconds for the whole plane, each tile within a second.

On the CPU the tile size decides two costs that pull apart. Every tile reads
the network's margin around what it keeps (48 px a side for the shipped
networks), so small tiles compute many pixels twice; but PyTorch's CPU
convolutions run fastest on inputs up to about 512 x 512 and slow down
beyond (their feature maps leave the processor's caches). OpenVINO's speed
is flat over tile sizes. :func:`choose_cpu_tile` therefore counts, for every
way of splitting the plane into ``ny x nx`` even tiles, the pixels computed
and the time they take at the engine's speed for that tile size, and takes
the fastest split whose single tiles each finish within
:data:`CANCEL_SECONDS` (a cancelled job stops between tiles) and fit the
memory budget.

The speed for the cancel limit is measured: every job records how fast its
tiles ran in its :class:`~napari_unet.core.inference.engine.EngineCache`
(:meth:`~napari_unet.core.inference.engine.EngineCache.record_speed`), and the
next job of the same owner sizes its tiles by it. Before any measurement
the conservative :data:`FIRST_GUESS_MPX_S` is used.

Measured with ``benchmarks/inference.py`` on 2 cores of an Intel Xeon
(AVX-512, AMX; docs/performance.md *Tile size on the CPU*): the shipped
nuclei network in PyTorch ran 3.9-4.0 Mpx/s (float32) and 9-10.6 Mpx/s
(bfloat16) on 352-512 px inputs, 2.7 and 5.6 at 1024 px; OpenVINO 4.1-5.0
and 17-20 Mpx/s from 352 to 1024 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from napari_unet.core.network.geometry import round_up, same_margin
from napari_unet.core.network.unet import UNetConfig

__all__ = ["CANCEL_SECONDS", "FIRST_GUESS_MPX_S", "SpeedProfile", "choose_cpu_tile", "speed_profile"]

#: Longest one tile may take on the CPU: Cancel acts between tiles.
CANCEL_SECONDS = 1.0

#: Input megapixels per second assumed for an engine before a job has measured it
#: (about what the shipped networks ran at in float32 on 2 AVX2 cores).
FIRST_GUESS_MPX_S = {"torch": 1.0, "openvino": 2.0}


@dataclass(frozen=True)
class SpeedProfile:
    """How an engine's speed changes with the tile side (relative to its speed on small tiles).

    Attributes
    ----------
    knee : int
        Input side (pixels) up to which the speed stays at its best.
    falloff : float
        Beyond the knee the speed falls as ``(knee / side) ** falloff``; 0 for an
        engine whose speed does not depend on the tile size.
    """

    knee: int
    falloff: float

    def relative_speed(self, input_pixels: float) -> float:
        """Speed on a tile of ``input_pixels``, as a fraction of the engine's best.

        Examples
        --------
        >>> SpeedProfile(knee=512, falloff=0.6).relative_speed(512 * 512)
        1.0
        >>> round(SpeedProfile(knee=512, falloff=0.6).relative_speed(1024 * 1024), 2)
        0.66
        """
        side = math.sqrt(max(input_pixels, 1.0))
        if self.falloff == 0 or side <= self.knee:
            return 1.0
        return float((self.knee / side) ** self.falloff)


def speed_profile(engine: str, /) -> SpeedProfile:
    """The measured :class:`SpeedProfile` of a CPU engine (``"torch"`` or ``"openvino"``)."""
    if engine == "openvino":
        return SpeedProfile(knee=0, falloff=0.0)
    # PyTorch, float32 and bfloat16 alike: 512 px inputs at full speed, 1024 px at 0.61-0.68 of it
    return SpeedProfile(knee=512, falloff=0.6)


def choose_cpu_tile(
    extent: tuple[int, int],
    config: UNetConfig,
    /,
    *,
    engine: str,
    speed_mpx_s: float | None = None,
    max_side: int = 4096,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """Largest input size (height, width) of the tiles for a ``same`` network on the CPU.

    Parameters
    ----------
    extent : tuple of int
        (Y, X) size of the region to predict.
    config : UNetConfig
        The network (its margin and down-sampling).
    engine : {"torch", "openvino"}
        What will run the tiles (its :func:`speed_profile`).
    speed_mpx_s : float, optional
        Input megapixels per second this engine ran at in an earlier job (at
        its best tile size); :data:`FIRST_GUESS_MPX_S` if not measured yet.
    max_side : int
        Largest tile side allowed.
    max_pixels : int, optional
        Largest tile (input pixels) the memory budget allows.

    Returns
    -------
    tuple of int
        The ``tile_shape`` to give :func:`~napari_unet.core.inference.tiling.tile_grid`.

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> config = UNetConfig(depth=4, base_features=16, padding="same")
    >>> choose_cpu_tile((512, 512), config, engine="torch", speed_mpx_s=4.0)  # one 608 px tile
    (608, 608)
    >>> choose_cpu_tile((2048, 2048), config, engine="openvino", speed_mpx_s=4.0)  # tiles of 1 s at most
    (2144, 1120)
    """
    speed = float(speed_mpx_s or FIRST_GUESS_MPX_S.get(engine, 1.0)) * 1e6
    profile = speed_profile(engine)
    step = config.downsampling
    margin = round_up(same_margin(config), step)
    limit = speed * CANCEL_SECONDS
    if max_pixels is not None:
        limit = min(limit, float(max_pixels))

    def axis(n: int, length: int) -> int:
        """Input side of each of ``n`` even tiles along an axis of ``length``."""
        return round_up(-(-length // n), step) + 2 * margin

    def splits(length: int) -> list[int]:
        """Numbers of tiles worth trying along an axis: near the fewest allowed, the largest square, the knee."""
        fewest = max(1, -(-length // max_side))
        square = max(1, -(-length // max(step, int(math.sqrt(limit)) - 2 * margin)))
        knee = max(1, -(-length // max(step, profile.knee - 2 * margin)))
        most = max(1, -(-length // step))
        wanted = set(range(fewest, fewest + 16)) | set(range(max(1, square - 8), square + 16))
        if profile.falloff:
            wanted |= set(range(max(1, knee - 8), knee + 8))
        return sorted(n for n in wanted if n <= most)

    best: tuple[float, int, int] | None = None
    smallest: tuple[float, int, int] | None = None
    for ny in splits(extent[0]):
        height = axis(ny, extent[0])
        for nx in splits(extent[1]):
            width = axis(nx, extent[1])
            pixels = height * width
            if smallest is None or pixels < smallest[0]:
                smallest = (float(pixels), height, width)
            if pixels > limit or max(height, width) > max_side:
                continue
            seconds = ny * nx * pixels / (speed * profile.relative_speed(pixels))
            if best is None or seconds < best[0]:
                best = (seconds, height, width)
    chosen = best or smallest
    assert chosen is not None
    return chosen[1], chosen[2]
