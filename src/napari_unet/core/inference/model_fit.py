"""Notices for images a model was not made for, said before its result is trusted.

So far one case is detected for certain: a colour (RGB) image given to a
model that reads one channel. It is converted to luminance, which is right
for a fluorescence image saved as RGB, but a stained (H&E) or brightfield
image has dark objects on a bright background, unlike the fluorescence
images the shipped one-channel models learnt from.
"""

from __future__ import annotations

from napari_unet.core.inference.layout import ImageLayout
from napari_unet.core.network.model_file import SegmentationModel


def colour_notice(layout: ImageLayout, model: SegmentationModel, /) -> str | None:
    """A notice when an RGB image meets a one-channel model (None otherwise).

    Examples
    --------
    >>> from napari_unet.core import new_model
    >>> from napari_unet.core.inference.layout import infer_layout
    >>> model = new_model(depth=2, base_features=4, padding="same", name="nuclei")
    >>> colour_notice(infer_layout((30, 40, 3), in_channels=1, rgb=True), model)[:33]
    'the image is RGB colour but the m'
    >>> colour_notice(infer_layout((30, 40), in_channels=1), model) is None
    True
    """
    if not layout.to_gray:
        return None
    name = model.description.name
    return (
        f"the image is RGB colour but the model {name!r} reads one channel: it was converted to gray. "
        "Stained (H&E) or brightfield images are not what a fluorescence model knows: check the result, "
        "and fine-tune on a few corrected images of this kind"
    )
