"""Which axes of an image are planes, rows, columns and channels.

An image may be 2-D grayscale (Y, X), RGB (Y, X, 3|4), multichannel with the
channel axis anywhere, or a stack (Z or T, ...) of any of those. A
:class:`ImageLayout` says how to get each (Y, X, C) plane that the network
needs, without copying the image (numpy views, lazy dask slices).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.errors import UserError

#: Rec. 601 luma weights, used when an RGB image meets a grayscale model.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageLayoutError(UserError, ValueError):
    """The image cannot be interpreted for this model; the message says what to do."""


@dataclass(frozen=True)
class ImageLayout:
    """How an nD image maps onto (Y, X, C) planes.

    Attributes
    ----------
    shape : tuple of int
        Shape of the image.
    channel_axis : int or None
        Axis holding channels (non-negative), or None for single-channel.
    to_gray : bool
        Convert RGB(A) to one luminance channel (RGB image, grayscale model).
    """

    shape: tuple[int, ...]
    channel_axis: int | None
    to_gray: bool = False

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """The (Y, X) axes: the last two axes that are not the channel axis."""
        axes = [a for a in range(len(self.shape)) if a != self.channel_axis]
        return axes[-2], axes[-1]

    @property
    def stack_axes(self) -> tuple[int, ...]:
        """Leading axes (Z, T, ...) over which planes are taken."""
        y, x = self.spatial_axes
        return tuple(a for a in range(len(self.shape)) if a not in (y, x, self.channel_axis))

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Shape of the stack of planes (``()`` for a single plane)."""
        return tuple(self.shape[a] for a in self.stack_axes)

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(Y, X) size of every plane."""
        y, x = self.spatial_axes
        return self.shape[y], self.shape[x]

    @property
    def n_planes(self) -> int:
        """Number of planes."""
        return int(np.prod(self.stack_shape, dtype=np.int64)) if self.stack_shape else 1

    def plane_indices(self) -> Iterator[tuple[int, ...]]:
        """Stack indices of all planes, in C order."""
        yield from np.ndindex(*self.stack_shape) if self.stack_shape else iter([()])

    def plane(self, image: Any, index: tuple[int, ...], /) -> Any:
        """The (Y, X, C) plane at stack ``index`` (a view or lazy slice)."""
        key: list[Any] = [slice(None)] * len(self.shape)
        for axis, i in zip(self.stack_axes, index):
            key[axis] = i
        plane = image[tuple(key)]
        # remaining axes are Y, X and maybe C, in their original order
        remaining = [a for a in range(len(self.shape)) if a not in self.stack_axes]
        if self.channel_axis is None:
            plane = plane[..., None]
        else:
            c = remaining.index(self.channel_axis)
            if c != 2:
                plane = _moveaxis(plane, c, 2)
        if self.to_gray:
            plane = _LumaView(plane)
        return plane


def _moveaxis(a: Any, src: int, dst: int) -> Any:
    if hasattr(a, "compute"):
        import dask.array as da

        return da.moveaxis(a, src, dst)
    return np.moveaxis(a, src, dst)


class _LumaView:
    """Lazy RGB(A) -> gray conversion of a (Y, X, 3|4) plane, applied on slicing."""

    def __init__(self, rgb: Any) -> None:
        self._rgb = rgb
        self.shape = (*rgb.shape[:2], 1)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        block = self._rgb[key]
        if hasattr(block, "compute"):
            block = block.compute()
        block = np.asarray(block, dtype=np.float32)[..., :3]
        return (block @ _LUMA)[..., None]


def infer_layout(
    shape: tuple[int, ...],
    /,
    *,
    in_channels: int,
    channel_axis: int | None = None,
    rgb: bool = False,
) -> ImageLayout:
    """Decide how an image of ``shape`` feeds a model with ``in_channels``.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    in_channels : int
        Channels the model expects.
    channel_axis : int, optional
        The axis holding channels, if the image has one (negative allowed).
    rgb : bool
        The last axis holds RGB(A) colour (as napari's ``layer.rgb``).

    Returns
    -------
    ImageLayout

    Raises
    ------
    ImageLayoutError
        For empty, 1-D or ambiguous images, and channel counts that do not
        fit the model; the message says what to change.

    Notes
    -----
    An RGB image given to a grayscale model is converted to luminance; an
    alpha channel is dropped. A multichannel model needs the channel axis
    named, unless exactly one of the first or last axes has as many entries
    as the model has channels.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ImageLayoutError(f"the image has {ndim} dimension(s); segmentation needs at least a 2-D (Y, X) image")
    if 0 in shape:
        raise ImageLayoutError(f"the image is empty (shape {shape}); open an image with pixels in it")
    if rgb:
        if shape[-1] not in (3, 4) or ndim < 3:
            raise ImageLayoutError(f"an RGB image needs a last axis of 3 or 4 colours, got shape {shape}")
        if channel_axis is not None and channel_axis % ndim != ndim - 1:
            raise ImageLayoutError("an RGB image has its colours on the last axis; do not name another channel axis")
        channel_axis = ndim - 1
        if in_channels == 1:
            return ImageLayout(shape, channel_axis, to_gray=True)
        n = 3 if in_channels == 3 else shape[-1]
        if n != in_channels:
            raise ImageLayoutError(f"this model expects {in_channels} channels, but the image is RGB")
        if shape[-1] == 4 and in_channels == 3:
            raise ImageLayoutError("RGBA images need the alpha channel removed for a 3-channel model")
        return ImageLayout(shape, channel_axis)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ImageLayoutError(f"channel axis {channel_axis} does not exist in an image of {ndim} dimensions")
        channel_axis %= ndim
        if ndim < 3:
            raise ImageLayoutError("a 2-D image has no room for a channel axis; it is a single-channel (Y, X) image")
        if shape[channel_axis] != in_channels:
            raise ImageLayoutError(
                f"the image has {shape[channel_axis]} channels on axis {channel_axis}, "
                f"but this model expects {in_channels}; choose a model for this many channels"
            )
        return ImageLayout(shape, channel_axis)
    if in_channels == 1:
        return ImageLayout(shape, None)
    candidates = [a for a in {0, ndim - 1} if ndim >= 3 and shape[a] == in_channels]
    if len(candidates) == 1:
        return ImageLayout(shape, candidates[0])
    if ndim == 2:
        raise ImageLayoutError(
            f"this model needs {in_channels} channels and the image (shape {shape}) has none: it is a "
            "single-channel (grayscale) image; choose a model for one channel"
        )
    if in_channels not in shape:
        raise ImageLayoutError(
            f"this model needs {in_channels} channels and no axis of the image (shape {shape}) has "
            f"{in_channels} entries; choose a model for this image's channels"
        )
    raise ImageLayoutError(
        f"this model expects {in_channels} channels; say which axis of the image (shape {shape}) holds them"
    )
