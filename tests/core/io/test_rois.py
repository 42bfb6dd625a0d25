"""The objects as an ImageJ ROI Manager .zip: one polygon per object and plane, read back by roifile."""

from __future__ import annotations

import numpy as np
import pytest
import roifile
from skimage.draw import polygon2mask

from napari_unet.core.io.atomic import OutputError
from napari_unet.core.io.rois import label_rois, write_rois


def _mask_of(roi, shape):
    """Pixels whose centre is inside the ROI (ImageJ coordinates: a pixel's centre is at +0.5)."""
    return polygon2mask(shape, roi.coordinates()[:, ::-1] - 0.5)


def test_real_nuclei_come_back_pixel_for_pixel(tmp_path, nuclei_crop):
    _, labels = nuclei_crop
    path = write_rois(tmp_path / "nuclei_rois.zip", labels, axes="YX")
    rois = roifile.roiread(path)
    ids = [int(i) for i in np.unique(labels)[1:]]
    assert sorted(int(r.name) for r in rois) == ids
    ious = []
    for roi in rois:
        inside, truth = _mask_of(roi, labels.shape), labels == int(roi.name)
        ious.append((inside & truth).sum() / (inside | truth).sum())
    assert min(ious) > 0.9 and np.median(ious) == 1.0


def test_stack_rois_carry_their_plane():
    labels = np.zeros((2, 3, 16, 16), np.uint16)
    labels[1, 2, 4:8, 4:8] = 5
    (roi,) = label_rois(labels, axes="TZYX")
    assert roi.name == "0005-t2-z3" and (roi.t_position, roi.z_position, roi.c_position) == (2, 3, 1)
    assert _mask_of(roi, (16, 16)).sum() == 16


def test_an_object_in_pieces_is_outlined_by_its_largest_piece():
    labels = np.zeros((12, 12), np.uint8)
    labels[1:3, 1:3] = 1
    labels[5:10, 5:10] = 1
    (roi,) = label_rois(labels, axes="YX")
    assert _mask_of(roi, labels.shape).sum() == 25


def test_an_existing_zip_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "r.zip"
    path.write_bytes(b"mine")
    with pytest.raises(OutputError):
        write_rois(path, np.ones((4, 4), np.uint8), axes="YX")
    assert path.read_bytes() == b"mine"
    write_rois(path, np.ones((4, 4), np.uint8), axes="YX", overwrite=True)
    assert len(roifile.roiread(path)) == 1
