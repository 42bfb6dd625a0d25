"""Applying a network to images: device, engine, overlap-tile prediction, axes, segmentation.

- :mod:`.device`: choosing the device, memory, out-of-memory handling.
- :mod:`.engine`: PyTorch or OpenVINO for the forward pass.
- :mod:`.tiling`: the overlap-tile grid (what is read, cropped and written).
- :mod:`.predict`: probabilities of one plane, tile by tile.
- :mod:`.layout`: which axes of an image are channels, stack and plane.
- :mod:`.segmentation`: :func:`~.segmentation.segment` of whole images and stacks.
"""
