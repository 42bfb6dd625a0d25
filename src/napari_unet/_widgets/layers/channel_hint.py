"""Telling the user when the channels of an image were segmented as a stack.

With the channel axis on "auto", an image of shape (3, Y, X) given to a
one-channel model is segmented plane by plane: each channel becomes a
plane of the result. That is right for a Z stack of three planes and
wrong for three fluorescence channels, and the shape alone cannot tell
them apart. So the Segment widget says what it did and how to choose.
"""

from __future__ import annotations

from napari_unet.core.inference.layout import ImageLayout

#: Largest axis length taken for a plausible channel axis (more is a Z or time stack).
MAX_CHANNELS = 6


def plausible_channel_axes(layout: ImageLayout) -> list[int]:
    """Stack axes of ``layout`` short enough to hold channels (2 to :data:`MAX_CHANNELS` entries)."""
    return [axis for axis in layout.stack_axes if 2 <= layout.shape[axis] <= MAX_CHANNELS]


def channel_notice(layout: ImageLayout, *, in_channels: int, layer_name: str, model_name: str) -> str:
    """What to tell the user when a plausible channel axis was segmented as a stack; ``""`` otherwise.

    Parameters
    ----------
    layout : ImageLayout
        The layout the job uses (channel axis chosen automatically).
    in_channels : int
        Input channels of the model.
    layer_name, model_name : str
        For the message.

    Returns
    -------
    str
        The message, or ``""`` when the image has a channel axis, or no stack
        axis that looks like channels, or the model takes as many channels.

    Examples
    --------
    >>> from napari_unet.core.inference.layout import infer_layout
    >>> text = channel_notice(infer_layout((3, 64, 64), in_channels=1), in_channels=1,
    ...                       layer_name="cells", model_name="nuclei")
    >>> "axis 0" in text and "Split Stack" in text
    True
    """
    if layout.channel_axis is not None:
        return ""
    axes = [axis for axis in plausible_channel_axes(layout) if layout.shape[axis] > in_channels]
    if not axes:
        return ""
    axis = axes[0]
    n = layout.shape[axis]
    channels = f"{in_channels} channel{'s' if in_channels > 1 else ''}"
    text = (
        f"{layer_name!r} has {n} entries along axis {axis}, which may be channels. The model {model_name!r} "
        f"takes {channels}, so each of the {n} was segmented as a separate plane (Channel axis: auto). "
    )
    if in_channels == 1:
        text += (
            "To segment one channel, split the channels (right-click the layer > Split Stack) and segment "
            "the one you want; if the axis is Z or time, this is what you want."
        )
    else:
        text += (
            f"To use them as channels, set Channel axis to {axis} under Advanced options "
            f"(the model needs {in_channels})."
        )
    return text
