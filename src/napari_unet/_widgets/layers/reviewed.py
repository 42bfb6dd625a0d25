"""Reviewed regions: shapes the user drew to say "these pixels are checked"."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.draw import polygon as fill_polygon


def reviewed_mask(shapes_layer: Any, image_layer: Any, labels_shape: tuple[int, ...], /) -> np.ndarray:
    """Pixels of the image inside any shape of ``shapes_layer``.

    Parameters
    ----------
    shapes_layer : napari.layers.Shapes
        Rectangles or polygons drawn over the image; each is mapped into the
        image's pixel grid through world coordinates, so the two layers may
        have different scales and translations.
    image_layer : napari.layers.Image
        The annotated image.
    labels_shape : tuple of int
        Shape of the labels (the image without its channel axis).

    Returns
    -------
    numpy.ndarray of bool
        ``labels_shape``. For stacks, a shape marks the plane it was drawn
        on (its leading coordinates, rounded).
    """
    mask = np.zeros(labels_shape, bool)
    ndim = len(labels_shape)
    image_scale = np.asarray(image_layer.scale, float)
    image_translate = np.asarray(image_layer.translate, float)
    if image_layer.rgb or len(image_scale) > ndim:  # drop a trailing colour or channel axis
        image_scale, image_translate = image_scale[:ndim], image_translate[:ndim]
    shape_scale = np.asarray(shapes_layer.scale, float)
    shape_translate = np.asarray(shapes_layer.translate, float)
    for vertices in shapes_layer.data:
        world = np.asarray(vertices, float) * shape_scale + shape_translate
        # align trailing (Y, X) axes: shapes drawn on a 2-D view of a stack have 2 columns
        world = world[:, -ndim:] if world.shape[1] >= ndim else world
        pixels = (world - image_translate[-world.shape[1] :]) / image_scale[-world.shape[1] :]
        rows, cols = fill_polygon(pixels[:, -2], pixels[:, -1], shape=labels_shape[-2:])
        if ndim > 2 and pixels.shape[1] == ndim:
            plane = tuple(int(round(v)) for v in pixels[0, :-2])
            if all(0 <= p < n for p, n in zip(plane, labels_shape[:-2])):
                mask[plane][rows, cols] = True
        else:
            mask[..., rows, cols] = True
    return mask
