"""Tests for reading images and writing label / probability TIFFs.

Files are checked three ways: through our own :func:`read_image`, through
tifffile directly, and through :func:`read_imagej_metadata`, an independent
parser of the first TIFF directory that shows what ImageJ/Fiji sees. For
ImageJ files, :func:`_fiji_planes` reads the pixels the way Fiji's native TIFF
reader does (all planes contiguous from the first strip), without tifffile.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from imagej_reader import read_imagej_metadata
from napari_unet.core.io.atomic import OutputError
from napari_unet.core.io.tiff import (
    ImageInfo,
    ImageReadError,
    LabelsDtypeWarning,
    read_image,
    write_labels,
    write_probabilities,
)


def _fiji_planes(path: Path) -> np.ndarray:
    """Pixels of an ImageJ TIFF read as Fiji's native reader does: (images, Y, X)."""
    meta = read_imagej_metadata(path)
    assert meta["is_imagej"]
    n = meta["imagej"].get("images", 1)
    kind = {1: "u", 2: "i", 3: "f"}[meta["sample_format"]]
    dtype = np.dtype(f"{meta['byteorder']}{kind}{meta['bits_per_sample'] // 8}")
    plane = meta["height"] * meta["width"] * dtype.itemsize
    with open(path, "rb") as fh:
        if meta["compression"] == 1:
            # Fiji ignores the other IFDs of an ImageJ stack: one contiguous block.
            fh.seek(meta["strip_offsets"][0])
            raw = fh.read(n * plane)
        else:
            assert meta["compression"] == 8, "Fiji reads zlib (8) but not every compression"
            assert n == 1, "Fiji cannot read a compressed ImageJ stack"
            chunks = []
            for offset, count in zip(meta["strip_offsets"], meta["strip_byte_counts"]):
                fh.seek(offset)
                chunks.append(zlib.decompress(fh.read(count)))
            raw = b"".join(chunks)
    assert len(raw) == n * plane
    return np.frombuffer(raw, dtype=dtype).reshape(n, meta["height"], meta["width"])


def _labels(shape: tuple[int, ...], top: int, *, seed: int = 0) -> np.ndarray:
    """Random labels in [0, top] that include both 0 and ``top``."""
    labels = np.random.default_rng(seed).integers(0, top, size=shape, endpoint=True, dtype=np.int64)
    labels.flat[0], labels.flat[-1] = 0, top
    return labels


# --------------------------------------------------------------------------- labels: ImageJ files


def test_uint8_2d_labels_round_trip_as_compressed_imagej_file(tmp_path):
    labels = _labels((13, 17), 200)
    path = tmp_path / "labels.tif"

    result = write_labels(path, labels, scale=(0.25, 0.5))

    assert (result.path, result.dtype, result.imagej, result.compression) == (path, np.uint8, True, "zlib")
    assert result.warning is None
    data, info = read_image(path)
    assert data.dtype == np.uint8 and np.array_equal(data, labels)
    assert info == ImageInfo(axes="YX", pixel_size=(0.25, 0.5), unit="um", rgb=False)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        assert tif.series[0].axes == "YX"
    meta = read_imagej_metadata(path)
    assert meta["bits_per_sample"] == 8 and meta["sample_format"] == 1
    assert (meta["width"], meta["height"]) == (17, 13)
    assert meta["imagej"]["unit"] == "um"
    assert meta["pixel_width"] == pytest.approx(0.5) and meta["pixel_height"] == pytest.approx(0.25)
    assert meta["resolution_unit"] == 1  # NONE, as ImageJ writes it; the unit is in the description
    assert meta["compression"] == 8
    assert np.array_equal(_fiji_planes(path)[0], labels)


def test_uint16_zyx_labels_are_an_uncompressed_imagej_stack(tmp_path):
    labels = _labels((4, 9, 11), 1000)
    path = tmp_path / "labels.tif"

    result = write_labels(path, labels, scale=(2.0, 0.3, 0.3), unit="nm")

    assert (result.dtype, result.imagej, result.compression) == (np.uint16, True, "none")
    data, info = read_image(path)
    assert data.dtype == np.uint16 and np.array_equal(data, labels)
    assert info == ImageInfo(axes="ZYX", pixel_size=(2.0, 0.3, 0.3), unit="nm", rgb=False)
    meta = read_imagej_metadata(path)
    ij = meta["imagej"]
    assert (ij["images"], ij["slices"], ij["spacing"], ij["unit"]) == (4, 4, 2.0, "nm")
    assert "frames" not in ij
    assert meta["bits_per_sample"] == 16 and meta["compression"] == 1 and meta["n_ifds"] == 4
    assert meta["pixel_width"] == pytest.approx(0.3)
    assert np.array_equal(_fiji_planes(path), labels)


def test_tzyx_labels_record_frames_and_slices(tmp_path):
    labels = _labels((2, 3, 8, 5), 60)
    path = tmp_path / "labels.tif"

    write_labels(path, labels, scale=(1.5, 0.1, 0.2))

    data, info = read_image(path)
    assert np.array_equal(data, labels)
    assert info.axes == "TZYX" and info.spatial_axes == "ZYX"
    assert info.pixel_size == (1.5, 0.1, 0.2)
    ij = read_imagej_metadata(path)["imagej"]
    assert (ij["images"], ij["frames"], ij["slices"]) == (6, 2, 3)
    # ImageJ plane order is Z fastest, then T: C order of a (T, Z, Y, X) array.
    assert np.array_equal(_fiji_planes(path), labels.reshape(6, 8, 5))


def test_tyx_labels_accept_a_napari_scale_and_ignore_its_time_step(tmp_path):
    labels = _labels((3, 6, 7), 9)
    path = tmp_path / "labels.tif"

    write_labels(path, labels, axes="TYX", scale=(10.0, 0.2, 0.3))

    data, info = read_image(path)
    assert np.array_equal(data, labels)
    assert info.axes == "TYX" and info.pixel_size == (0.2, 0.3)
    ij = read_imagej_metadata(path)["imagej"]
    assert ij["frames"] == 3 and "slices" not in ij and "spacing" not in ij


def test_labels_without_scale_carry_no_calibration(tmp_path):
    path = tmp_path / "labels.tif"
    write_labels(path, _labels((6, 6), 3))

    _, info = read_image(path)
    assert info.pixel_size is None and info.unit is None
    assert "unit" not in read_imagej_metadata(path)["imagej"]


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((5, 1), "YX"), ((1, 1), "YX"), ((3, 5, 1), "ZYX"), ((2, 1, 1), "ZYX"), ((2, 2, 3, 1), "TZYX")],
)
def test_one_pixel_wide_labels_keep_their_orientation(tmp_path, shape, axes):
    labels = _labels(shape, 7)
    path = tmp_path / "labels.tif"

    write_labels(path, labels, axes=axes)

    meta = read_imagej_metadata(path)
    assert (meta["height"], meta["width"]) == shape[-2:]
    assert np.array_equal(_fiji_planes(path).reshape(shape), labels)
    data, _ = read_image(path)
    assert np.array_equal(data.reshape(shape), labels)


@pytest.mark.parametrize(("top", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16)])
def test_smallest_imagej_dtype_is_chosen(tmp_path, top, dtype):
    path = tmp_path / "labels.tif"
    result = write_labels(path, _labels((4, 4), top))
    assert result.dtype == dtype and result.imagej
    assert read_image(path)[0].dtype == dtype
    assert read_imagej_metadata(path)["bits_per_sample"] == np.dtype(dtype).itemsize * 8


def test_bool_labels_are_written_as_uint8(tmp_path):
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    path = tmp_path / "mask.tif"

    assert write_labels(path, mask).dtype == np.uint8

    data, _ = read_image(path)
    assert data.dtype == np.uint8 and np.array_equal(data, mask.astype(np.uint8))


def test_whole_number_float_labels_are_accepted(tmp_path):
    labels = np.array([[0.0, 3.0], [300.0, 1.0]], dtype=np.float32)
    path = tmp_path / "labels.tif"

    assert write_labels(path, labels).dtype == np.uint16

    assert np.array_equal(read_image(path)[0], labels.astype(np.uint16))


# --------------------------------------------------------------------------- labels: beyond ImageJ


def test_labels_above_65535_are_a_plain_uint32_tiff_with_a_warning(tmp_path):
    labels = _labels((3, 6, 5), 70000)
    path = tmp_path / "labels.tif"

    with pytest.warns(LabelsDtypeWarning, match="Fiji opens as a 32-bit"):
        result = write_labels(path, labels, scale=(2.0, 0.5, 0.25))

    assert (result.dtype, result.imagej) == (np.uint32, False)
    assert result.warning is not None and "65535" in result.warning
    data, info = read_image(path)
    assert data.dtype == np.uint32 and np.array_equal(data, labels)
    assert info == ImageInfo(axes="ZYX", pixel_size=(2.0, 0.5, 0.25), unit="um", rgb=False)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej
    meta = read_imagej_metadata(path)
    assert not meta["is_imagej"]
    assert (meta["bits_per_sample"], meta["sample_format"], meta["n_ifds"]) == (32, 1, 3)
    assert meta["resolution_unit"] == 3  # CENTIMETER: Fiji converts it to micrometres
    assert meta["x_resolution"] == pytest.approx(1e4 / 0.25) and meta["y_resolution"] == pytest.approx(1e4 / 0.5)


def test_labels_above_uint32_are_uint64_with_a_warning(tmp_path):
    labels = np.array([[0, 2**40], [5, 2**32]], dtype=np.int64)
    path = tmp_path / "labels.tif"

    with pytest.warns(LabelsDtypeWarning, match="Fiji cannot open"):
        result = write_labels(path, labels)

    assert result.dtype == np.uint64 and not result.imagej
    data, info = read_image(path)
    assert data.dtype == np.uint64 and np.array_equal(data, labels) and info.axes == "YX"
    assert read_imagej_metadata(path)["bits_per_sample"] == 64


def test_labels_warning_as_error_writes_nothing(tmp_path):
    path = tmp_path / "labels.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelsDtypeWarning)
        with pytest.raises(LabelsDtypeWarning):
            write_labels(path, np.array([[0, 70000]]))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- labels: refused input


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([[0, -3], [1, 2]]), "negative"),
        (np.array([[0.0, 1.5]]), "fractional"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.0, -1.0]]), "negative"),
        (np.zeros((0, 4), dtype=np.uint8), "empty"),
    ],
)
def test_bad_label_values_are_refused_before_writing(tmp_path, labels, match):
    path = tmp_path / "labels.tif"
    with pytest.raises(ValueError, match=match):
        write_labels(path, labels)
    assert not path.exists()


@pytest.mark.parametrize("labels", [np.array([[1 + 2j]]), np.array([["a", "b"]])])
def test_non_numeric_labels_are_refused(tmp_path, labels):
    with pytest.raises(TypeError, match="labels must be integers"):
        write_labels(tmp_path / "labels.tif", labels)


@pytest.mark.parametrize(
    ("shape", "axes", "match"),
    [
        ((4, 4), "ZYX", "do not fit 2-D"),
        ((2, 4, 4), "YXZ", "'ZYX' or 'TYX'"),
        ((4,), None, "got 1 dimension"),
        ((2, 2, 2, 2, 2), None, "got 5 dimension"),
    ],
)
def test_bad_label_axes_are_refused(tmp_path, shape, axes, match):
    with pytest.raises(ValueError, match=match):
        write_labels(tmp_path / "labels.tif", np.ones(shape, dtype=np.uint8), axes=axes)


@pytest.mark.parametrize("scale", [(1.0, 1.0, 1.0, 1.0), (0.5,), (0.5, -1.0), (0.0, 1.0), (np.nan, 1.0), 0.5])
def test_bad_scale_is_refused(tmp_path, scale):
    with pytest.raises(ValueError, match="scale"):
        write_labels(tmp_path / "labels.tif", np.ones((3, 3), dtype=np.uint8), scale=scale)


def test_bad_unit_and_compression_are_refused(tmp_path):
    labels = np.ones((3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="compression"):
        write_labels(tmp_path / "a.tif", labels, compression="jpeg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unit"):
        write_labels(tmp_path / "a.tif", labels, scale=(1.0, 1.0), unit="a=b")
    assert list(tmp_path.iterdir()) == []


def test_compression_none_writes_an_uncompressed_2d_file(tmp_path):
    path = tmp_path / "labels.tif"
    assert write_labels(path, _labels((8, 8), 4), compression="none").compression == "none"
    assert read_imagej_metadata(path)["compression"] == 1


# --------------------------------------------------------------------------- atomic writing


def test_existing_file_is_refused_and_left_byte_identical(tmp_path):
    path = tmp_path / "labels.tif"
    write_labels(path, _labels((6, 6), 5, seed=1))
    before = path.read_bytes()

    with pytest.raises(OutputError, match="already exists"):
        write_labels(path, _labels((6, 6), 9, seed=2))

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_overwrite_true_replaces_the_file(tmp_path):
    path = tmp_path / "labels.tif"
    write_labels(path, _labels((6, 6), 5, seed=1))
    new = _labels((4, 7), 9, seed=2)

    write_labels(path, new, overwrite=True)

    assert np.array_equal(read_image(path)[0], new)


def _failing_imwrite(exc: BaseException):
    def imwrite(file, *args, **kwargs):
        file.write(b"II*\x00" + b"\x00" * 100)  # some bytes reach the temporary file
        raise exc

    return imwrite


def test_failed_write_keeps_the_previous_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "labels.tif"
    write_labels(path, _labels((6, 6), 5))
    before = path.read_bytes()
    monkeypatch.setattr(tifffile, "imwrite", _failing_imwrite(RuntimeError("boom")))

    with pytest.raises(RuntimeError, match="boom"):
        write_labels(path, _labels((6, 6), 9, seed=3), overwrite=True)

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _failing_imwrite(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_probabilities(tmp_path / "p.tif", np.zeros((2, 4, 4)))
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_reported_as_output_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _failing_imwrite(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OutputError, match="disk is full"):
        write_labels(tmp_path / "labels.tif", _labels((6, 6), 5))
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk_says_how_much_an_uncompressed_file_needs(small_disk):
    # tifffile writes the pixels with numpy's tofile, whose short write has no errno
    probabilities = np.random.default_rng(0).random((2, 1000, 1000))  # 8 MB as float32
    with pytest.raises(OutputError, match="disk is full") as caught:
        write_probabilities(small_disk / "p.tif", probabilities)
    message = str(caught.value)
    assert "needs at least 8 MB" in message and f"the disk holding {str(small_disk)!r}" in message
    assert "free at least 7 MB there or write elsewhere" in message
    assert list(small_disk.iterdir()) == []


def test_a_real_full_disk_during_a_compressed_write_keeps_the_previous_file(small_disk):
    path = small_disk / "labels.tif"
    write_labels(path, _labels((6, 6), 5))
    before = path.read_bytes()
    noise = np.random.default_rng(1).integers(1, 60000, (1200, 1200)).astype(np.uint16)  # does not compress
    with pytest.raises(OutputError, match="disk is full") as caught:
        write_labels(path, noise, overwrite=True)
    assert "write elsewhere" in str(caught.value)
    assert path.read_bytes() == before
    assert [p.name for p in small_disk.iterdir()] == ["labels.tif"]


def test_missing_output_folder_raises_output_error(tmp_path):
    folder = tmp_path / "missing"
    with pytest.raises(OutputError, match="does not exist"):
        write_labels(folder / "labels.tif", _labels((6, 6), 5))
    assert not folder.exists()


# --------------------------------------------------------------------------- probabilities


def test_probabilities_are_a_float32_imagej_file_with_classes_as_channels(tmp_path):
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=(6, 7)).transpose(2, 0, 1)  # (C, Y, X) float64
    path = tmp_path / "probabilities.tif"

    assert write_probabilities(path, probabilities, scale=(0.5, 0.5)) == path

    data, info = read_image(path)
    assert data.dtype == np.float32 and np.allclose(data, probabilities, atol=1e-7)
    assert info == ImageInfo(axes="CYX", pixel_size=(0.5, 0.5), unit="um", rgb=False)
    meta = read_imagej_metadata(path)
    assert (meta["bits_per_sample"], meta["sample_format"]) == (32, 3)
    ij = meta["imagej"]
    assert (ij["channels"], ij["images"], ij["min"], ij["max"]) == (3, 3, 0.0, 1.0)
    assert np.array_equal(_fiji_planes(path), probabilities.astype(np.float32))


def test_probabilities_are_reordered_to_imagej_axis_order(tmp_path):
    probabilities = np.random.default_rng(1).random((2, 3, 5, 4)).astype(np.float32)  # (C, Z, Y, X)
    path = tmp_path / "probabilities.tif"

    write_probabilities(path, probabilities, scale=(3.0, 0.5, 0.5))

    data, info = read_image(path)
    assert info.axes == "ZCYX" and info.pixel_size == (3.0, 0.5, 0.5)
    assert np.array_equal(data, np.moveaxis(probabilities, 0, 1))
    ij = read_imagej_metadata(path)["imagej"]
    assert (ij["channels"], ij["slices"], ij["spacing"]) == (2, 3, 3.0)


@pytest.mark.parametrize(("shape", "axes"), [((2, 4, 4), "CZY"), ((2, 4, 4), "CCYX"), ((2, 4, 4), "CYY")])
def test_probabilities_with_bad_axes_are_refused(tmp_path, shape, axes):
    with pytest.raises(ValueError, match="axes"):
        write_probabilities(tmp_path / "p.tif", np.zeros(shape), axes=axes)


# --------------------------------------------------------------------------- reading


def test_missing_file_is_an_image_read_error_naming_it(tmp_path):
    path = tmp_path / "nowhere.tif"
    with pytest.raises(ImageReadError, match="nowhere.tif.*does not exist"):
        read_image(path)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_imagej_metadata(path)


def test_folder_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"hello, not an image"])
def test_non_tiff_file_is_an_image_read_error(tmp_path, content):
    path = tmp_path / "image.tif"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="image.tif.*not a TIFF"):
        read_image(path)
    with pytest.raises(ImageReadError, match="not a valid TIFF"):
        read_imagej_metadata(path)


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_tiff_is_an_image_read_error(tmp_path, keep):
    source = tmp_path / "whole.tif"
    write_labels(source, _labels((3, 64, 64), 255), compression="zlib")
    whole = source.read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(whole[: int(len(whole) * keep)])

    with pytest.raises(ImageReadError, match="truncated.tif.*damaged or incomplete") as excinfo:
        read_image(path)
    assert isinstance(excinfo.value, ValueError)


def test_corrupt_compressed_data_is_an_image_read_error(tmp_path):
    path = tmp_path / "corrupt.tif"
    write_labels(path, _labels((64, 64), 255))
    offset = read_imagej_metadata(path)["strip_offsets"][0]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))

    with pytest.raises(ImageReadError, match="damaged"):
        read_image(path)


def test_real_em_slice_reads_as_uncalibrated_grayscale(shared_data):
    data, info = read_image(shared_data / "isbi2012_em" / "train" / "images" / "slice_00.tif")
    assert data.shape == (512, 512) and data.dtype == np.uint8
    assert info == ImageInfo(axes="YX", pixel_size=None, unit=None, rgb=False)
    assert 0 < data.mean() < 255


@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_rgb_samples_end_up_on_the_last_axis(tmp_path, planarconfig):
    rgb = np.random.default_rng(0).integers(0, 255, size=(5, 6, 3), dtype=np.uint8)
    stored = rgb if planarconfig == "contig" else np.moveaxis(rgb, -1, 0)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, stored, photometric="rgb", planarconfig=planarconfig)

    data, info = read_image(path)

    assert info.axes == "YXS" and info.rgb
    assert np.array_equal(data, rgb)


def test_imagej_multichannel_file_reads_as_cyx(tmp_path):
    image = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    path = tmp_path / "channels.tif"
    tifffile.imwrite(path, image, imagej=True, metadata={"axes": "CYX"})

    data, info = read_image(path)

    assert info.axes == "CYX" and not info.rgb
    assert np.array_equal(data, image)


def test_unlabelled_stack_reads_as_z(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint16), photometric="minisblack", metadata=None)
    assert read_image(path)[1].axes == "ZYX"


def test_ome_physical_sizes_are_read(tmp_path):
    path = tmp_path / "image.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5}
    tifffile.imwrite(path, np.zeros((2, 4, 4), np.uint16), ome=True, photometric="minisblack", metadata=metadata)

    _, info = read_image(path)

    assert info.axes == "ZYX" and info.pixel_size == (0.5, 0.2, 0.1) and info.unit == "um"


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [((1e4 / 0.2, 1e4 / 0.4), "CENTIMETER", (0.4, 0.2)), ((72.0, 72.0), "INCH", None)],
)
def test_plain_tiff_resolution_in_cm_is_used_and_dpi_ignored(tmp_path, resolution, unit, expected):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), resolution=resolution, resolutionunit=unit)

    _, info = read_image(path)

    assert info.pixel_size == expected and info.unit == ("um" if expected else None)


# --------------------------------------------------------------------------- the independent reader


def test_independent_reader_handles_big_endian_imagej_files(tmp_path):
    image = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    path = tmp_path / "big_endian.tif"
    tifffile.imwrite(
        path, image, imagej=True, byteorder=">", resolution=(2.0, 4.0),
        metadata={"axes": "ZYX", "unit": "um", "spacing": 3.0},
    )  # fmt: skip

    meta = read_imagej_metadata(path)

    assert meta["byteorder"] == ">" and not meta["bigtiff"]
    assert (meta["width"], meta["height"], meta["bits_per_sample"], meta["n_ifds"]) == (4, 3, 16, 2)
    assert (meta["pixel_width"], meta["pixel_height"]) == (0.5, 0.25)
    assert meta["imagej"]["spacing"] == 3.0 and meta["imagej"]["slices"] == 2
    assert np.array_equal(_fiji_planes(path), image)


def test_independent_reader_handles_bigtiff(tmp_path):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 9), np.uint16), bigtiff=True, photometric="minisblack",
                     description="not imagej", metadata=None)  # fmt: skip

    meta = read_imagej_metadata(path)

    assert meta["bigtiff"] and (meta["width"], meta["height"], meta["n_ifds"]) == (9, 8, 3)
    assert meta["description"] == "not imagej" and meta["imagej"] == {} and not meta["is_imagej"]


def test_independent_reader_decodes_escaped_micron_unit(tmp_path):
    path = tmp_path / "micron.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "\\u00B5m"})  # fmt: skip

    assert read_imagej_metadata(path)["imagej"]["unit"] == "µm"
    assert read_image(path)[1].unit == "um"


def test_independent_reader_rejects_a_truncated_directory(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    first_ifd = int.from_bytes(path.read_bytes()[4:8], "little")
    path.write_bytes(path.read_bytes()[: first_ifd + 6])

    with pytest.raises(ImageReadError, match="beyond the end of the file"):
        read_imagej_metadata(path)


# --------------------------------------------------------------------------- property test

_INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@st.composite
def _label_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(_INT_DTYPES)))
    limit = int(np.iinfo(dtype).max)
    # A cap near each boundary makes every stored dtype likely, not only the largest.
    cap = draw(st.sampled_from([c for c in (1, 255, 256, 65535, 65536, 2**32 - 1, 2**32, limit) if c <= limit]))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=5))
    return draw(hnp.arrays(dtype, shape, elements=st.integers(0, cap)))


@settings(max_examples=60, deadline=None)
@given(labels=_label_arrays())
def test_any_non_negative_label_array_round_trips(labels):
    expected = np.min_scalar_type(int(labels.max()))  # smallest unsigned type, computed by numpy
    axes = "YX" if labels.ndim == 2 else "ZYX"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.tif"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = write_labels(path, labels)
        data, info = read_image(path)
        meta = read_imagej_metadata(path)
        fiji = _fiji_planes(path) if result.imagej else None
        assert os.listdir(folder) == ["labels.tif"]

    assert result.dtype == expected
    assert result.imagej == (expected.itemsize <= 2)
    assert [w.category for w in caught] == ([] if result.imagej else [LabelsDtypeWarning])
    assert data.dtype == expected
    assert np.array_equal(data.reshape(labels.shape), labels)
    assert meta["bits_per_sample"] == 8 * expected.itemsize
    if result.imagej:
        # tifffile drops a length-1 Z from an ImageJ file; Y and X always stay.
        assert info.axes == ("YX" if labels.ndim == 3 and labels.shape[0] == 1 else axes)
        assert np.array_equal(fiji.reshape(labels.shape), labels)
    else:
        assert info.axes == axes


# --------------------------------------------------------------------------- images larger than memory


def test_a_small_file_that_expands_beyond_memory_is_refused_before_reading(tmp_path):
    import time

    from huge_tiff import HUGE_SHAPE, huge_compressed_tiff
    from napari_unet.core.errors import UserError
    from napari_unet.core.io.memory import ImageTooLargeError
    from napari_unet.core.io.tiff import read_header

    path = huge_compressed_tiff(tmp_path / "huge.tif")
    assert path.stat().st_size < 2_000_000
    header = read_header(path)
    assert header is not None and header.shape == HUGE_SHAPE and header.nbytes > 100 * 1024**3
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as caught:
        read_image(path)
    assert time.perf_counter() - started < 5  # refused from the header, not after decoding
    message = str(caught.value)
    assert "300000 x 300000 uint16" in message and "GiB" in message and "huge.tif" in message
    assert "--block-size" in message and "large-images.md" in message
    assert isinstance(caught.value, UserError) and isinstance(caught.value, MemoryError)


def test_an_image_that_fits_is_read_whatever_the_memory_check(tmp_path, monkeypatch):
    from napari_unet.core.io import memory

    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.ones((40, 50), np.uint16))
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 40 * 50 * 2)  # just enough
    assert read_image(path)[0].shape == (40, 50)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 40 * 50 * 2 - 1)
    with pytest.raises(memory.ImageTooLargeError, match="needs about 4 KiB"):
        read_image(path)


def test_read_header_gives_what_read_image_returns(tmp_path):
    from napari_unet.core.io.tiff import read_header

    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((3, 20, 30), np.uint8), photometric="rgb", planarconfig="separate")
    data, info = read_image(path)
    header = read_header(path)
    assert header is not None
    assert (header.shape, header.dtype, header.axes, header.rgb) == (data.shape, data.dtype, info.axes, info.rgb)
    assert read_header(tmp_path / "missing.tif") is None


# --------------------------------------------------------------------------- files of several images


def test_a_file_of_several_series_says_only_the_first_is_read(tmp_path):
    from napari_unet.core.io.tiff import ImageSeriesWarning

    path = tmp_path / "positions.ome.tif"
    first = np.arange(600, dtype=np.uint8).reshape(20, 30)
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(first)
        writer.write(np.ones((5, 8), np.uint8))
        writer.write(np.ones((6, 9), np.uint8))
    with pytest.warns(ImageSeriesWarning) as caught:
        data, info = read_image(path)
    assert np.array_equal(data, first) and info.axes == "YX"
    (message,) = [str(w.message) for w in caught]
    assert "holds 3 images (TIFF series)" in message and "20 x 30 YX" in message
    assert "5 x 8 YX, 6 x 9 YX" in message and "own file" in message


def test_a_file_of_one_series_reads_without_a_warning(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, np.zeros((4, 5), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path)[0].shape == (4, 5)
