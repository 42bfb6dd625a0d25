"""Exporting results: the headless export job, the Labels writer and batch summaries.

Every written file is read back twice: by tifffile and by the independent
:func:`read_imagej_metadata` (what Fiji sees).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from imagej_reader import read_imagej_metadata
from napari_unet._writer import write_labels_layer
from napari_unet.core.batch.files import FileSummary, segment_files, write_summary
from napari_unet.core.io.atomic import OutputError
from napari_unet.core.io.calibration import label_axes, spatial_calibration
from napari_unet.core.io.export import (
    ExportItem,
    class_mask,
    existing_outputs,
    export_files,
    export_job,
    file_stem,
)
from napari_unet.core.io.tiff import read_image


def _labels(shape: tuple[int, ...], top: int) -> np.ndarray:
    labels = np.random.default_rng(0).integers(0, top, size=shape, endpoint=True).astype(np.int64)
    labels.flat[-1] = top
    return labels


@pytest.mark.parametrize(("top", "dtype", "bits"), [(200, np.uint8, 8), (40_000, np.uint16, 16)])
def test_exported_zyx_labels_round_trip_with_calibration(tmp_path, top, dtype, bits):
    labels = _labels((3, 7, 9), top)
    item = ExportItem(tmp_path / "cells_labels.tif", labels, "labels", "ZYX", (2.0, 0.5, 0.25), "um")
    [exported] = export_files([item])

    assert exported.dtype == dtype and exported.warning is None
    back = tifffile.imread(item.path)
    assert back.dtype == dtype and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)
    meta = read_imagej_metadata(item.path)
    assert meta["is_imagej"] and meta["bits_per_sample"] == bits
    assert meta["imagej"]["slices"] == 3 and meta["imagej"]["unit"] == "um"
    assert meta["imagej"]["spacing"] == pytest.approx(2.0)
    assert meta["pixel_width"] == pytest.approx(0.25) and meta["pixel_height"] == pytest.approx(0.5)


def test_exported_probabilities_are_float32_with_classes_as_channels(tmp_path):
    probabilities = np.random.default_rng(1).random((2, 3, 6, 5)).astype(np.float64)  # Z, C, Y, X
    item = ExportItem(tmp_path / "p.tif", probabilities, "probabilities", "ZCYX", (1.5, 0.5, 0.5))
    [exported] = export_files([item])
    assert exported.dtype == np.float32
    back = tifffile.imread(item.path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, probabilities.astype(np.float32))
    meta = read_imagej_metadata(item.path)
    assert meta["sample_format"] == 3 and meta["imagej"]["channels"] == 3 and meta["imagej"]["slices"] == 2


def test_labels_above_65535_fall_back_to_uint32_with_the_warning_returned(tmp_path):
    labels = _labels((6, 6), 70_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the job returns the warning instead of issuing it
        [exported] = export_files([ExportItem(tmp_path / "big.tif", labels, "labels", "YX")])
    assert exported.dtype == np.uint32 and "65535" in exported.warning
    assert not read_imagej_metadata(exported.path)["is_imagej"]
    np.testing.assert_array_equal(tifffile.imread(exported.path), labels)


def test_export_refuses_existing_files_and_leaves_them_untouched(tmp_path):
    path = tmp_path / "a_labels.tif"
    path.write_bytes(b"keep me")
    items = [ExportItem(path, _labels((4, 4), 3), "labels", "YX")]
    assert existing_outputs(items) == [path]
    with pytest.raises(OutputError, match="already exists"):
        export_files(items)
    assert path.read_bytes() == b"keep me"
    export_files(items, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(path), items[0].data)


def test_stopping_the_job_between_files_leaves_only_complete_files(tmp_path):
    items = [ExportItem(tmp_path / f"{n}.tif", _labels((5, 5), 9), "labels", "YX") for n in "abc"]
    job = export_job(items)
    reports = [next(job), next(job)]  # before a.tif, then before b.tif (a.tif is written)
    job.close()  # what thread_worker.quit() does at a yield
    assert [r.done for r in reports] == [0, 1] and reports[1].message == "writing b.tif"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), items[0].data)


def test_class_mask_is_the_most_probable_class():
    background = np.array([[0.7, 0.1], [0.2, 0.3]])
    interior = np.array([[0.2, 0.8], [0.1, 0.3]])
    boundary = 1 - background - interior
    mask = class_mask([background, interior, boundary])
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 1], [2, 2]])


@pytest.mark.parametrize(
    ("name", "stem"), [("nuclei", "nuclei"), ("a/b:c.tif", "a_b_c"), ("stack.ome.tiff", "stack"), ("...", "image")]
)
def test_file_stem_is_safe(name, stem):
    assert file_stem(name) == stem


# --------------------------------------------------------------------------- layer geometry


@pytest.mark.parametrize(
    ("ndim", "labels", "units", "axes"),
    [
        (2, None, None, "YX"),
        (3, None, None, "ZYX"),
        (3, ("t", "y", "x"), None, "TYX"),
        (3, ("0", "1", "2"), ("second", "micrometer", "micrometer"), "TYX"),
        (4, None, None, "TZYX"),
    ],
)
def test_label_axes_from_the_layer(ndim, labels, units, axes):
    assert label_axes(ndim, axis_labels=labels, units=units) == axes


def test_label_axes_refuse_five_dimensions():
    with pytest.raises(ValueError, match="2-D, 3-D or 4-D"):
        label_axes(5)


@pytest.mark.parametrize(
    ("scale", "units", "axes", "expected"),
    [
        ((1.0, 1.0), ("pixel", "pixel"), "YX", (None, None)),
        ((0.5, 0.25), ("pixel", "pixel"), "YX", ((0.5, 0.25), "um")),
        ((0.5, 0.25), ("nanometer", "nanometer"), "YX", ((0.5, 0.25), "nm")),
        ((2.0, 0.5, 0.5), ("micrometer", "nanometer", "nanometer"), "ZYX", ((2000.0, 0.5, 0.5), "nm")),
        ((3.0, 0.5, 0.5), ("second", "micrometer", "micrometer"), "TYX", ((0.5, 0.5), "um")),
    ],
)
def test_spatial_calibration_from_scale_and_units(scale, units, axes, expected):
    assert spatial_calibration(scale, units, axes) == expected


def test_writer_function_writes_a_calibrated_tyx_file(tmp_path):
    labels = _labels((2, 6, 8), 12).astype(np.int32)
    meta = {
        "scale": [5.0, 0.5, 0.5],
        "units": ("second", "micrometer", "micrometer"),
        "axis_labels": ("t", "y", "x"),
        "multiscale": False,
    }
    [written] = write_labels_layer(str(tmp_path / "t.tif"), labels, meta)
    data, info = read_image(written)
    np.testing.assert_array_equal(data, labels)
    assert data.dtype == np.uint8
    assert info.axes == "TYX" and info.pixel_size == (0.5, 0.5) and info.unit == "um"
    assert read_imagej_metadata(written)["imagej"]["frames"] == 2


# --------------------------------------------------------------------------- batch API


def test_segment_files_returns_rows_and_writes_the_summary(tmp_path, nuclei_crop, tiny_model):
    image, _ = nuclei_crop
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image[:48, :48])
    stages = []
    rows = segment_files(
        [tmp_path / "in"],
        model=tiny_model,
        output_folder=tmp_path / "out",
        device="cpu",
        summary=tmp_path / "s.json",
        on_progress=lambda p: stages.append(p.stage),
    )
    assert [(r.status, r.output) for r in rows] == [("ok", str(tmp_path / "out" / "a.tif"))]
    written = tifffile.imread(tmp_path / "out" / "a.tif")
    # (an untrained model may call the whole crop one object: count IDs, not values minus background)
    assert rows[0].objects == len(np.unique(written[written > 0]))
    assert stages[0] == "file-start" and stages[-1] == "file-done" and "tiles" in stages
    assert '"status": "ok"' in (tmp_path / "s.json").read_text()
    again = segment_files([tmp_path / "in" / "a.tif"], model=tiny_model, output_folder=tmp_path / "out")
    assert [r.status for r in again] == ["skipped"]


def test_write_summary_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=".csv or .json"):
        write_summary([FileSummary("a", "b", "ok", 1, 0.1)], tmp_path / "s.txt")
    assert list(tmp_path.iterdir()) == []
