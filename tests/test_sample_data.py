"""Sample data shipped for File > Open Sample."""

from __future__ import annotations

import numpy as np

from napari_unet._sample_data import nuclei_sample, nuclei_sample_with_labels


def test_nuclei_sample_is_a_2d_image_layer():
    ((data, kwargs, kind),) = nuclei_sample()
    assert kind == "image"
    assert data.ndim == 2 and data.dtype == np.uint8 and data.std() > 0
    assert kwargs["name"] == "nuclei"


def test_sample_with_labels_matches_the_image():
    (image, _, _), (labels, kwargs, kind) = nuclei_sample_with_labels()
    assert kind == "labels"
    assert labels.shape == image.shape
    assert len(np.unique(labels)) > 50  # about a hundred annotated nuclei
