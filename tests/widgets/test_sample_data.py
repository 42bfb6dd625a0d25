"""Sample data shipped for File > Open Sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_unet._sample_data import crowded_nuclei_sample, nuclei_sample, nuclei_sample_with_labels


def test_nuclei_sample_is_a_2d_image_layer():
    ((data, kwargs, kind),) = nuclei_sample()
    assert kind == "image"
    assert data.ndim == 2 and data.dtype == np.uint8 and data.std() > 0
    assert kwargs["name"] == "nuclei"
    # the nuclei fill the display range instead of sitting dim in napari's default 0-255
    assert kwargs["contrast_limits"] == [data.min(), data.max()] and data.max() < 200


def test_sample_with_labels_matches_the_image():
    (image, _, _), (labels, kwargs, kind) = nuclei_sample_with_labels()
    assert kind == "labels"
    assert labels.shape == image.shape
    assert len(np.unique(labels)) > 50  # about a hundred annotated nuclei


def test_crowded_sample_has_hundreds_of_labelled_nuclei_on_its_image():
    (image, image_kwargs, image_kind), (labels, label_kwargs, label_kind) = crowded_nuclei_sample()
    assert (image_kind, label_kind) == ("image", "labels")
    assert labels.shape == image.shape and image.dtype == np.uint8
    assert len(np.unique(labels)) > 200
    assert image[labels > 0].mean() > image[labels == 0].mean()  # bright nuclei on a dark background
    assert "CC0" in image_kwargs["metadata"]["source"] and "CC0" in label_kwargs["metadata"]["source"]


def test_manifest_lists_every_sample_function():
    import yaml

    from napari_unet import _sample_data

    manifest = yaml.safe_load((Path(_sample_data.__file__).parent / "napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    for entry in manifest["contributions"]["sample_data"]:
        module, name = commands[entry["command"]].split(":")
        assert module == "napari_unet._sample_data" and callable(getattr(_sample_data, name))
