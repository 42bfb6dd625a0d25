"""How much memory segmenting an image whole needs, checked before any work.

The whole-image path (:func:`~napari_unet.core.inference.segmentation.segment_job`)
holds the result of every plane, and, while a plane is processed, that plane's class
probabilities, the intensity statistics' working copy and the object separation's
arrays. The tiles themselves take a bounded amount (the tile size follows the free
memory). An image whose estimate exceeds the available memory is refused at once, with
:class:`~napari_unet.core.io.memory.ImageTooLargeError` pointing to the block-by-block
path, instead of failing with a bare allocation error after minutes of work.
"""

from __future__ import annotations

import os

from napari_unet.core.inference.layout import ImageLayout, infer_layout
from napari_unet.core.io.memory import ImageTooLargeError, refuse_if_too_large
from napari_unet.core.io.tiff import read_header
from napari_unet.core.network.unet import UNetConfig

__all__ = ["check_whole_image", "check_whole_image_file", "fits_in_memory", "whole_image_bytes"]

#: Bytes per pixel of a plane that separating objects needs (class map, masks, seeds, labels),
#: and that the class map needs; measured peaks of a 4096 x 4096 image, rounded up.
_INSTANCE_WORK = 56
_CLASS_WORK = 24


def whole_image_bytes(
    layout: ImageLayout, config: UNetConfig, /, *, output_kind: str, keep_probabilities: bool = False
) -> int:
    """Estimated peak memory of segmenting an image of ``layout`` whole, besides the image itself.

    Parameters
    ----------
    layout : ImageLayout
        The image's planes and channels.
    config : UNetConfig
        The network (its input channels and classes).
    output_kind : {"instances", "classes", "probabilities"}
        What is kept of every plane.
    keep_probabilities : bool
        Probabilities are kept besides the labels.

    Returns
    -------
    int
        Bytes: the results of all planes plus the working arrays of one plane.
    """
    plane = layout.plane_shape[0] * layout.plane_shape[1]
    pixels = plane * layout.n_planes
    probabilities = 4 * config.n_classes
    kept = {"instances": 4, "classes": 1, "probabilities": 0}[output_kind]
    if output_kind == "probabilities" or keep_probabilities:
        kept += probabilities
    work = (
        probabilities
        + 8 * config.in_channels
        + {"instances": _INSTANCE_WORK, "classes": _CLASS_WORK}.get(output_kind, 0)
    )
    return pixels * kept + plane * work


def check_whole_image(
    layout: ImageLayout,
    config: UNetConfig,
    /,
    *,
    output_kind: str,
    keep_probabilities: bool = False,
    image_bytes: int = 0,
    name: str = "the image",
) -> None:
    """Refuse an image whose whole-image segmentation would not fit in the available memory.

    Parameters
    ----------
    layout, config, output_kind, keep_probabilities
        As for :func:`whole_image_bytes`.
    image_bytes : int
        Bytes of the image still to be read (0 when it is already in memory).
    name : str
        How the message calls the image.

    Raises
    ------
    ImageTooLargeError
        The estimate exceeds the available memory; the message points to the
        block-by-block path.
    """
    needed = image_bytes + whole_image_bytes(
        layout, config, output_kind=output_kind, keep_probabilities=keep_probabilities
    )
    height, width = layout.plane_shape
    planes = f"{layout.n_planes} planes of " if layout.n_planes > 1 else ""
    refuse_if_too_large(needed, what=f"segmenting {name} whole ({planes}{height} x {width} pixels)")


def fits_in_memory(
    layout: ImageLayout, config: UNetConfig, /, *, output_kind: str, keep_probabilities: bool = False
) -> bool:
    """Whether segmenting an image of ``layout`` whole fits in the available memory (see :func:`check_whole_image`)."""
    try:
        check_whole_image(layout, config, output_kind=output_kind, keep_probabilities=keep_probabilities)
    except ImageTooLargeError:
        return False
    return True


def check_whole_image_file(
    path: str | os.PathLike,
    config: UNetConfig,
    /,
    *,
    output_kind: str,
    channel_axis: int | None = None,
) -> None:
    """:func:`check_whole_image` for a TIFF file, from its header, before its pixels are read.

    Files whose header cannot be read, or whose axes do not fit the model, pass:
    reading them, or laying them out, then says what is wrong.
    """
    header = read_header(path)
    if header is None:
        return
    if channel_axis is None and not header.rgb and "C" in header.axes:
        channel_axis = header.axes.index("C")
    try:
        layout = infer_layout(header.shape, in_channels=config.in_channels, channel_axis=channel_axis, rgb=header.rgb)
    except ValueError:
        return
    check_whole_image(layout, config, output_kind=output_kind, image_bytes=header.nbytes, name=repr(str(path)))
