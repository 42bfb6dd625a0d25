"""The network's geometry: what size goes in, what comes out, how much context a pixel needs.

One place for the rules that overlap-tile prediction, the block grid, the training
patches and the memory estimate all depend on: the output size of an input, the halo a
``valid`` network loses on each side, valid input sizes, the context a ``same`` network's
tile must read, and rounding to the down-sampling (pooling) grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # geometry needs only a config's depth and padding
    from napari_unet.core.network.unet import UNetConfig

__all__ = [
    "halo",
    "largest_valid_input",
    "output_size",
    "patch_geometry",
    "round_down",
    "round_up",
    "same_margin",
    "valid_input_size",
]


def round_up(value: int | float, step: int, /) -> int:
    """The smallest multiple of ``step`` that is at least ``value``.

    Examples
    --------
    >>> round_up(100, 16), round_up(96, 16), round_up(0.5, 8)
    (112, 96, 8)
    """
    return -int(-value // step) * step


def round_down(value: int, step: int, /) -> int:
    """The largest multiple of ``step`` that is at most ``value``.

    Examples
    --------
    >>> round_down(100, 16)
    96
    """
    return value // step * step


def _output_size(depth: int, padding: str, input_size: int) -> int | None:
    shrink = 0 if padding == "same" else 4
    size = input_size
    for level in range(depth):
        if level > 0:
            if size % 2:
                return None
            size //= 2
        size -= shrink
        if size < 1:
            return None
    for _ in range(depth - 1):
        size = 2 * size - shrink
        if size < 1:
            return None
    return size


def output_size(config: UNetConfig, input_size: int) -> int | None:
    """Spatial output size for one axis, or ``None`` if the input is not valid.

    An input size is valid when every 2x2 max-pooling sees an even size and
    no feature map shrinks below one pixel.

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> output_size(UNetConfig(depth=5, padding="valid"), 572)
    388
    >>> output_size(UNetConfig(depth=5, padding="valid"), 573) is None
    True
    """
    return _output_size(config.depth, config.padding, input_size)


def _valid_input_size(depth: int, padding: str, at_least: int) -> int:
    step = 2 ** (depth - 1) if padding == "same" else 1
    size = step
    while True:
        out = _output_size(depth, padding, size)
        if out is not None and out >= at_least:
            return size
        size += step


def valid_input_size(config: UNetConfig, at_least: int) -> int:
    """Smallest valid input size whose *output* covers ``at_least`` pixels.

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> valid_input_size(UNetConfig(depth=5, padding="valid"), 388)
    572
    >>> valid_input_size(UNetConfig(depth=3, padding="same"), 10)
    12
    """
    return _valid_input_size(config.depth, config.padding, at_least)


def largest_valid_input(config: UNetConfig, at_most: int) -> int:
    """Largest valid input size not above ``at_most`` (the smallest valid one if none is).

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> largest_valid_input(UNetConfig(depth=5, padding="valid"), 580)
    572
    """
    size = at_most
    while size > 0:
        if output_size(config, size) is not None:
            return size
        size -= 1
    return valid_input_size(config, 1)


def _halo(depth: int, padding: Literal["same", "valid"] | str) -> int:
    if padding == "same":
        return 0
    size = _valid_input_size(depth, padding, 1)
    out = _output_size(depth, padding, size)
    assert out is not None  # a valid input size has an output
    return (size - out) // 2


def halo(config: UNetConfig) -> int:
    """Context lost on each side of a ``valid`` network (0 for ``same``).

    For the paper's depth-5 network this is 92 (572 = 388 + 2 * 92).

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> halo(UNetConfig(depth=5, padding="valid")), halo(UNetConfig(depth=5, padding="same"))
    (92, 0)
    """
    return _halo(config.depth, config.padding)


def same_margin(config: UNetConfig, /) -> int:
    """Context a ``same`` network's tile must read around what it keeps.

    The receptive-field radius of the equivalent ``valid`` network plus one
    pixel, rounded up to the down-sampling factor: beyond it, zero padding at
    a tile's edge cannot reach a kept pixel. (Max-pooling rounds the reach of
    the padding up, so the radius alone is one pixel short.)

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> same_margin(UNetConfig(depth=5, padding="same"))
    96
    """
    return round_up(_halo(config.depth, "valid") + 1, config.downsampling)


def patch_geometry(config: UNetConfig, output_patch: int, /) -> tuple[int, int, int]:
    """Input side, margin and output side of a training patch that covers ``output_patch`` pixels.

    A ``valid`` network reads its halo around the patch and outputs the
    smallest valid size covering it; a ``same`` network reads and outputs the
    patch rounded up to the down-sampling grid.

    Examples
    --------
    >>> from napari_unet.core.network.unet import UNetConfig
    >>> patch_geometry(UNetConfig(depth=5, padding="valid"), 388)
    (572, 92, 388)
    >>> patch_geometry(UNetConfig(depth=3, padding="same"), 130)
    (132, 0, 132)
    """
    if config.padding == "valid":
        size = valid_input_size(config, output_patch)
        out = output_size(config, size)
        assert out is not None  # a valid input size has an output
        return size, halo(config), out
    step = config.downsampling
    size = max(step, round_up(output_patch, step))
    return size, 0, size
