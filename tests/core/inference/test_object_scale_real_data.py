"""Object size on real nuclei: the shipped model at other magnifications, whole-image and block by block."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.transform import rescale

from napari_unet.core import load_named_model, segment, segment_to_zarr
from napari_unet.core.inference.resample import resample_labels
from napari_unet.core.io.ome_zarr import LazyImage
from scoring import average_precision_table


@pytest.fixture(scope="module")
def nuclei_model():
    return load_named_model("nuclei")


@pytest.fixture(scope="module")
def dsb_image(shared_data):
    folder = shared_data / "dsb2018_nuclei" / "val"
    name = sorted((folder / "images").glob("*.tif"))[0].name
    return tifffile.imread(folder / "images" / name).astype(np.float32), tifffile.imread(folder / "labels" / name)


def _magnified(image, labels, factor):
    big = rescale(image, factor, order=1, anti_aliasing=factor < 1, preserve_range=True).astype(np.float32)
    return big, resample_labels(labels, big.shape)


def _ap(truth, labels):
    return average_precision_table(truth, labels, thresholds=(0.5,))[0].average_precision


def test_the_shipped_models_record_the_size_of_their_training_objects():
    sizes = {name: load_named_model(name).description.object_diameter_px for name in ("nuclei", "cells", "em")}
    assert 15 < sizes["nuclei"] < 30 and sizes["cells"] > 2 * sizes["nuclei"] and sizes["em"] > 0


@pytest.mark.parametrize("magnification", [0.5, 3.0])
def test_auto_finds_nuclei_at_another_magnification_about_as_well_as_at_their_own(
    nuclei_model, dsb_image, magnification
):
    image, truth = dsb_image
    native = _ap(truth, segment(image, nuclei_model, device="cpu").labels)
    big, big_truth = _magnified(image, truth, magnification)
    fixed = segment(big, nuclei_model, diameter="model", device="cpu")
    auto = segment(big, nuclei_model, device="cpu")
    assert auto.object_scale.source == "auto"
    assert auto.object_scale.factor == pytest.approx(1 / magnification, rel=0.35)
    assert _ap(big_truth, auto.labels) > _ap(big_truth, fixed.labels) + 0.1
    assert _ap(big_truth, auto.labels) > native - 0.15


def test_block_by_block_uses_the_same_scale_and_finds_the_same_nuclei(tmp_path, nuclei_model, dsb_image):
    image, truth = dsb_image
    big, big_truth = _magnified(image, truth, 2.0)
    whole = segment(big, nuclei_model, diameter=40, device="cpu")
    result = segment_to_zarr(big, nuclei_model, tmp_path / "n.zarr", block_size=128, diameter=40, device="cpu")
    image_blocks = LazyImage(result.path)
    labels = np.asarray(image_blocks[:])
    image_blocks.close()
    assert (
        result.object_scale.factor
        == whole.object_scale.factor
        == pytest.approx(nuclei_model.description.object_diameter_px / 40)
    )
    assert result.n_blocks > 1
    assert abs(result.n_objects - whole.n_objects) <= 1
    assert _ap(whole.labels, labels) > 0.9
