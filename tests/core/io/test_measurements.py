"""One row per object: pixels, calibrated size, centroid and mean intensity, written as CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.io.measurements import measure_objects, write_measurements


def test_real_nuclei_measurements_match_scipy(tmp_path, nuclei_crop):
    image, labels = nuclei_crop
    ids = np.unique(labels)[1:]
    table = measure_objects(labels, axes="YX", intensity=image, scale=(0.25, 0.25))
    assert table["label"] == ids.tolist()
    assert table["pixels"] == ndi.sum_labels(np.ones_like(labels), labels, ids).astype(int).tolist()
    assert table["area_um2"] == pytest.approx([p * 0.0625 for p in table["pixels"]])
    assert table["mean_intensity"] == pytest.approx(ndi.mean(image, labels, ids).tolist())
    centre = ndi.center_of_mass(np.ones_like(labels), labels, ids)
    assert table["centroid_y"] == pytest.approx([c[0] for c in centre])
    assert table["centroid_x_um"] == pytest.approx([c[1] * 0.25 for c in centre])
    path = write_measurements(tmp_path / "m.csv", table)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(ids) and float(rows[0]["area_um2"]) == pytest.approx(table["area_um2"][0])


def test_stacks_give_volumes_and_frames():
    labels = np.zeros((2, 3, 10, 10), np.uint8)
    labels[0, 1, 2:4, 2:4] = 1
    labels[1, :, 5:8, 5:8] = 2
    table = measure_objects(labels, axes="TZYX", scale=(2.0, 0.5, 0.5))
    assert table["frame"] == [0, 1] and table["pixels"] == [4, 27]
    assert table["volume_um3"] == [2.0, 13.5] and table["centroid_z_um"] == [2.0, 2.0]
    assert "mean_intensity" not in table


def test_without_pixel_size_only_pixel_columns():
    table = measure_objects(np.eye(4, dtype=np.uint8), axes="YX")
    assert list(table) == ["label", "pixels", "centroid_y", "centroid_x"]


def test_multichannel_intensity_gives_one_mean_per_channel():
    labels = np.zeros((4, 4), np.uint8)
    labels[:2] = 1
    image = np.stack([np.full((4, 4), 3.0), np.full((4, 4), 5.0)], axis=-1)
    table = measure_objects(labels, axes="YX", intensity=image)
    assert table["mean_intensity_c0"] == [3.0] and table["mean_intensity_c1"] == [5.0]
