"""A training set saved as a folder of image/label TIFFs and read back (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.io.atomic import OutputError
from napari_unet.core.io.tiff import read_image
from napari_unet.core.training.annotations import AnnotationError
from napari_unet.core.training.finetune_job import AnnotatedImage
from napari_unet.core.training.training_set import load_training_set, save_training_set


def test_images_labels_and_reviewed_regions_come_back(tmp_path):
    rng = np.random.default_rng(0)
    gray = AnnotatedImage(
        "cells 1.tif", rng.integers(0, 255, (24, 32), dtype=np.uint8), np.eye(24, 32, dtype=np.uint16)
    )
    two = AnnotatedImage("two", rng.random((2, 24, 32), dtype=np.float32), np.ones((24, 32), np.int32), channel_axis=0)
    rgb = AnnotatedImage(
        "rgb", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), np.zeros((24, 32), np.uint8), rgb=True
    )
    reviewed = np.zeros((24, 32), bool)
    reviewed[:10] = True
    gray = AnnotatedImage(gray.name, gray.image, gray.labels, reviewed=reviewed)
    written = save_training_set([gray, two, rgb], tmp_path / "set")
    assert len(written) == 7
    labels, _ = read_image(tmp_path / "set" / "labels" / "cells 1.tif")
    assert labels.dtype == np.uint8  # the smallest type that fits

    loaded = {item.name: item for item in load_training_set(tmp_path / "set")}
    assert sorted(loaded) == ["cells 1", "rgb", "two"]
    np.testing.assert_array_equal(loaded["cells 1"].image, gray.image)
    np.testing.assert_array_equal(loaded["cells 1"].labels, gray.labels)
    np.testing.assert_array_equal(loaded["cells 1"].reviewed, reviewed)
    assert loaded["two"].channel_axis == 0 and loaded["two"].image.shape == (2, 24, 32)
    assert loaded["rgb"].rgb and loaded["rgb"].reviewed is None


def test_one_plane_keeps_only_that_plane(tmp_path):
    stack = AnnotatedImage("s", np.zeros((3, 8, 8), np.uint8), np.ones((3, 8, 8), np.uint16), plane=(1,))
    save_training_set([stack], tmp_path)
    (back,) = load_training_set(tmp_path)
    assert back.labels[1].all() and not back.labels[0].any() and not back.labels[2].any()


def test_existing_files_are_not_replaced_unless_asked(tmp_path):
    item = AnnotatedImage("a", np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8))
    save_training_set([item], tmp_path)
    with pytest.raises(OutputError, match="already exists"):
        save_training_set([item], tmp_path)
    save_training_set([AnnotatedImage("a", item.image, np.zeros((8, 8), np.uint8))], tmp_path, overwrite=True)
    assert not load_training_set(tmp_path)[0].labels.any()


def test_a_folder_without_labels_for_an_image_is_refused_by_name(tmp_path):
    save_training_set([AnnotatedImage("a", np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8))], tmp_path)
    (tmp_path / "labels" / "a.tif").unlink()
    with pytest.raises(AnnotationError, match="no labels for a.tif"):
        load_training_set(tmp_path)
    with pytest.raises(AnnotationError, match="needs an 'images' and a 'labels' folder"):
        load_training_set(tmp_path / "images")


def test_the_command_line_trains_on_a_saved_set(tmp_path, nuclei_crop, tiny_model_file):
    from napari_unet.cli import main

    image, labels = nuclei_crop
    save_training_set([AnnotatedImage("crop", image, labels)], tmp_path / "set")
    out = tmp_path / "m.unet.safetensors"
    args = ["train", str(tmp_path / "set" / "images"), "--labels", str(tmp_path / "set" / "labels")]
    args += ["--from", str(tiny_model_file), "-o", str(out), "--steps", "2", "--patch-size", "32", "--quiet"]
    assert main(args) == 0 and out.exists()
