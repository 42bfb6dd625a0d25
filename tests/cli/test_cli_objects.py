"""segment --stitch-threshold, --rois and --measurements: objects linked across Z and written for Fiji."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import roifile
import tifffile

from napari_unet.cli import main


@pytest.fixture
def zstack(tmp_path, nuclei_crop):
    """Three identical 96 x 96 nuclei planes as an ImageJ ZYX stack, 0.5 um pixels, 2 um apart."""
    image, _ = nuclei_crop
    path = tmp_path / "stack.tif"
    planes = np.stack([image[:96, :96]] * 3)
    tifffile.imwrite(
        path, planes, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"}
    )
    return path


def _segment(*args: str) -> int:
    return main(["segment", *args, "--model", "nuclei", "--device", "cpu", "--quiet"])


def test_stitched_stack_with_rois_and_measurements(tmp_path, zstack, capsys):
    out = tmp_path / "stack_labels.tif"
    assert _segment(str(zstack), "-o", str(out), "--stitch-threshold", "0.5", "--rois", "--measurements") == 0
    labels = tifffile.imread(out)
    n = int(labels.max())
    assert n > 3 and np.array_equal(labels[0], labels[2]) and f"({n} objects" in capsys.readouterr().out
    rois = roifile.roiread(tmp_path / "stack_labels_rois.zip")
    assert len(rois) == 3 * n and {r.z_position for r in rois} == {1, 2, 3}
    with (tmp_path / "stack_labels_measurements.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n and {int(r["label"]) for r in rows} == set(range(1, n + 1))
    first = rows[0]
    assert float(first["volume_um3"]) == pytest.approx(int(first["pixels"]) * 2.0 * 0.25)
    assert float(first["centroid_z_um"]) == pytest.approx(2.0)  # the middle plane, 2 um from the first
    assert float(first["mean_intensity"]) > 0


def test_without_stitching_every_plane_has_its_own_ids(tmp_path, zstack):
    out = tmp_path / "plain.tif"
    assert _segment(str(zstack), "-o", str(out)) == 0
    labels = tifffile.imread(out)
    assert set(np.unique(labels[0])).isdisjoint(set(np.unique(labels[1])) - {0})
    assert not (tmp_path / "plain_rois.zip").exists()


def test_a_time_lapse_is_linked_only_when_asked(tmp_path, nuclei_crop, capsys):
    image, _ = nuclei_crop
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, np.stack([image[:64, :64]] * 2), imagej=True, metadata={"axes": "TYX"})
    assert _segment(str(movie), "-o", str(tmp_path / "a.tif"), "--stitch-threshold", "0.5") == 1
    err = capsys.readouterr().err
    assert "movie.tif has no Z axis to link objects along (its axes are TYX); --stitch-axis T" in err
    assert not (tmp_path / "a.tif").exists()
    assert _segment(str(movie), "-o", str(tmp_path / "b.tif"), "--stitch-threshold", "0.5", "--stitch-axis", "T") == 0
    linked = tifffile.imread(tmp_path / "b.tif")
    assert np.array_equal(linked[0], linked[1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stitch-threshold", "2"], "--stitch-threshold is an IoU between 0 and 1"),
        (["--rois", "--output-kind", "classes"], "use them with --output-kind instances"),
    ],
)
def test_unusable_object_options_are_refused_before_any_work(tmp_path, zstack, capsys, extra, message):
    assert _segment(str(zstack), "-o", str(tmp_path / "x.tif"), *extra) == 2
    assert message in capsys.readouterr().err


def test_an_existing_roi_zip_fails_the_file_before_labels_are_written(tmp_path, zstack, capsys):
    (tmp_path / "s_rois.zip").write_bytes(b"mine")
    assert _segment(str(zstack), "-o", str(tmp_path / "s.tif"), "--rois") == 1
    assert "s_rois.zip exists (overwrite to replace it)" in capsys.readouterr().err
    assert not (tmp_path / "s.tif").exists() and (tmp_path / "s_rois.zip").read_bytes() == b"mine"
