"""Segmenting block by block into OME-Zarr: same result as one pass, bounded reads, safe output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_unet
from core_helpers import CountingArray, dots_image, threshold_model, tiny_model
from napari_unet.core import segment
from napari_unet.core.blockwise.to_zarr import segment_to_zarr, segment_to_zarr_job
from napari_unet.core.io.ome_zarr import LazyImage, OutputError, ZarrOutput, open_result
from napari_unet.core.network.registry import load_named_model

zarr = pytest.importorskip("zarr")

SAMPLES = Path(napari_unet.__file__).parent / "sample_data"


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images hold the same objects, whatever their numbers."""
    if not np.array_equal(a > 0, b > 0):
        return False
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[fg])) == len(np.unique(b[fg]))


def read(path) -> np.ndarray:
    return np.asarray(open_result(path)[0][...])


@pytest.fixture(scope="module")
def dots() -> np.ndarray:
    """Squares of 6 pixels every 9: many of them cut by borders of 32-pixel blocks."""
    return dots_image(11, 9, size=6, gap=3)


@pytest.mark.parametrize("block_size, margin", [(32, 16), (48, 8), (200, 16)])
def test_objects_cut_by_block_borders_are_joined(tmp_path, dots, block_size, margin):
    model = threshold_model()
    whole = segment(dots, model, device="cpu")
    result = segment_to_zarr(dots, model, tmp_path / "out.zarr", block_size=block_size, margin=margin, device="cpu")
    labels = read(result.path)
    assert labels.dtype == np.uint32 and labels.shape == dots.shape
    assert result.n_objects == whole.n_objects == 99
    assert same_partition(labels, whole.labels)
    assert sorted(np.unique(labels[labels > 0])) == list(range(1, 100))  # IDs 1..N, no gaps


def test_shipped_nuclei_model_blockwise_finds_the_same_nuclei(tmp_path):
    image = tifffile.imread(SAMPLES / "nuclei.tif")[:256, :320]
    model = load_named_model("nuclei")
    whole = segment(image, model, device="cpu")
    result = segment_to_zarr(image, model, tmp_path / "n.zarr", block_size=128, margin=64, device="cpu")
    labels = read(result.path)
    assert result.n_blocks == 6
    assert abs(result.n_objects - whole.n_objects) <= 1
    # Every whole-image nucleus has a blockwise twin with IoU > 0.5.
    matched = 0
    for obj in range(1, whole.n_objects + 1):
        mask = whole.labels == obj
        ids, counts = np.unique(labels[mask], return_counts=True)
        best = ids[np.argmax(counts)]
        if best and (np.logical_and(mask, labels == best).sum() / np.logical_or(mask, labels == best).sum()) > 0.5:
            matched += 1
    assert matched >= whole.n_objects - 1
    assert np.mean((labels > 0) == (whole.labels > 0)) > 0.995


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_probabilities_equal_a_whole_image_pass(tmp_path, padding):
    model = tiny_model(padding=padding)
    image = np.random.default_rng(1).random((150, 97)).astype(np.float32)
    whole = segment(image, model, output_kind="probabilities", device="cpu")
    result = segment_to_zarr(
        image, model, tmp_path / "p.zarr", output_kind="probabilities", block_size=64, device="cpu"
    )
    probabilities = read(result.path)
    assert probabilities.dtype == np.float32 and probabilities.shape == whole.probabilities.shape
    np.testing.assert_allclose(probabilities, whole.probabilities, atol=1e-5)


def test_classes_of_a_stack_with_axes_and_calibration(tmp_path):
    model = tiny_model(padding="same")
    stack = np.random.default_rng(2).random((3, 70, 90)).astype(np.float32)
    whole = segment(stack, model, output_kind="classes", device="cpu")
    result = segment_to_zarr(
        stack,
        model,
        tmp_path / "c.zarr",
        output_kind="classes",
        block_size=32,
        device="cpu",
        scale=(2.0, 0.5, 0.5),
        unit="micrometer",
        pyramid=False,
    )
    np.testing.assert_array_equal(read(result.path), whole.labels)
    attrs = zarr.open_group(str(result.path), mode="r").attrs
    multiscale = attrs["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert multiscale["axes"][1]["unit"] == "micrometer"
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    assert attrs["napari-unet"]["output"] == "classes"


def test_instance_ids_are_unique_over_a_stack(tmp_path, dots):
    stack = np.stack([dots, dots[::-1]])
    result = segment_to_zarr(stack, threshold_model(), tmp_path / "s.zarr", block_size=32, margin=16, device="cpu")
    labels = read(result.path)
    assert result.n_objects == 198
    assert not set(np.unique(labels[0])[1:]) & set(np.unique(labels[1])[1:])
    whole = segment(stack, threshold_model(), device="cpu")
    assert all(same_partition(labels[i], whole.labels[i]) for i in range(2))


def test_pyramid_levels_hold_real_ids(tmp_path):
    image = np.tile(dots_image(8, 8, size=6, gap=3), (20, 20))  # 1500 x 1500
    result = segment_to_zarr(image, threshold_model(), tmp_path / "big.zarr", block_size=512, margin=16, device="cpu")
    levels = open_result(result.path)
    assert result.levels == len(levels) == 3
    assert [lvl.shape for lvl in levels] == [(1500, 1500), (750, 750), (375, 375)]
    full = np.asarray(levels[0][...])
    np.testing.assert_array_equal(np.asarray(levels[1][...]), full[::2, ::2])
    assert set(np.unique(levels[2][...])) <= set(np.unique(full))


def test_reads_stay_bounded_whatever_the_image_size(tmp_path, dots):
    image = np.tile(dots, (8, 8))  # 816 x 672: larger than the 512 x 512 reads allowed
    source = CountingArray(image, max_read=512 * 512)
    result = segment_to_zarr(source, threshold_model(), tmp_path / "b.zarr", block_size=64, margin=16, device="cpu")
    assert result.n_objects == 99 * 64
    assert max(source.reads) <= 512 * 512 < image.size


def test_lazy_inputs_tiff_zarr_and_ome_zarr(tmp_path, dots):
    model = threshold_model()
    expected = segment(dots, model, device="cpu").labels
    tiff = tmp_path / "in.tif"
    tifffile.imwrite(tiff, dots, tile=(32, 32), resolution=(2.0, 2.0), imagej=False)
    plain = tmp_path / "in.zarr"
    zarr.create_array(str(plain), shape=dots.shape, chunks=(32, 32), dtype=dots.dtype)[...] = dots
    ome = segment_to_zarr(dots, model, tmp_path / "ome.zarr", output_kind="classes", block_size=32, device="cpu")
    for source in (tiff, plain):
        image = LazyImage(source)
        assert image.shape == dots.shape
        result = segment_to_zarr(
            source, model, tmp_path / f"{source.stem}{source.suffix[1:]}.zarr", block_size=32, margin=16, device="cpu"
        )
        assert same_partition(read(result.path), expected)
        image.close()
    # An OME-Zarr (here our own class mask, values 0/1) opens at full resolution.
    assert LazyImage(ome.path).shape == dots.shape


def test_cancel_leaves_no_output_and_keeps_the_old_one(tmp_path, dots):
    target = tmp_path / "out.zarr"
    segment_to_zarr(dots, threshold_model(), target, output_kind="classes", block_size=32, device="cpu")
    before = read(target)
    job = segment_to_zarr_job(
        np.zeros_like(dots),
        threshold_model(),
        target,
        output_kind="classes",
        block_size=32,
        device="cpu",
        overwrite=True,
    )
    for progress in job:
        if progress.stage == "blocks":
            job.close()  # what Cancel does
            break
    np.testing.assert_array_equal(read(target), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no partial folder left


def test_existing_output_is_not_replaced_unless_asked(tmp_path, dots):
    target = tmp_path / "out.zarr"
    segment_to_zarr(dots, threshold_model(), target, output_kind="classes", block_size=64, device="cpu")
    with pytest.raises(OutputError, match="exists"):
        segment_to_zarr(dots, threshold_model(), target, output_kind="classes", block_size=64, device="cpu")
    result = segment_to_zarr(
        np.zeros_like(dots),
        threshold_model(),
        target,
        output_kind="classes",
        block_size=64,
        device="cpu",
        overwrite=True,
    )
    assert read(result.path).max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_failure_in_a_block_leaves_no_output(tmp_path, dots):
    class Broken(CountingArray):
        def __getitem__(self, key):
            block = super().__getitem__(key)
            if len(self.reads) > 3:
                raise OSError("read error on the network share")
            return block

    with pytest.raises(OSError, match="network share"):
        segment_to_zarr(Broken(dots), threshold_model(), tmp_path / "out.zarr", block_size=32, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk_is_an_output_error_and_leaves_nothing(small_disk):
    image = np.random.default_rng(0).random((1024, 1024)).astype(np.float32)
    with pytest.raises(OutputError, match="disk is full") as caught:
        segment_to_zarr(
            image, threshold_model(), small_disk / "out.zarr", output_kind="probabilities", block_size=512, device="cpu"
        )
    assert f"the disk holding {str(small_disk)!r}" in str(caught.value)
    assert list(small_disk.iterdir()) == []


def test_bad_requests_are_refused_with_what_to_do(tmp_path, dots):
    model = threshold_model()
    with pytest.raises(ValueError, match="multiple of 2"):
        segment_to_zarr(dots, model, tmp_path / "a.zarr", block_size=31, device="cpu")
    with pytest.raises(ValueError, match="output_kind must be"):
        segment_to_zarr(dots, model, tmp_path / "a.zarr", output_kind="outlines", device="cpu")
    with pytest.raises(OutputError, match="does not exist"):
        segment_to_zarr(dots, model, tmp_path / "missing" / "a.zarr", device="cpu")
    with pytest.raises(ValueError, match="cannot be segmented"):
        segment_to_zarr(dots.astype(str), model, tmp_path / "a.zarr", device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_lazy_input_names_the_file(tmp_path):
    from napari_unet.core.io.tiff import ImageReadError

    bad = tmp_path / "slide.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{ not json")
    with pytest.raises(ImageReadError, match="slide.zarr"):
        _ = LazyImage(bad).shape


def test_zarr_output_metadata_is_ome_ngff(tmp_path):
    out = ZarrOutput(
        tmp_path / "x.zarr",
        shape=(2, 40, 30),
        dtype=np.float32,
        chunks=(1, 40, 30),
        axes="cyx",
        scale=(1, 0.25, 0.25),
        unit="micrometer",
    )
    out.array(0)[...] = 1.0
    path = out.commit()
    meta = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert meta["version"] == "0.4"
    assert [a["type"] for a in meta["axes"]] == ["channel", "space", "space"]
    assert "unit" not in meta["axes"][0]


@pytest.mark.slow
def test_dask_local_cluster_of_two_processes_equals_single_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    assert distributed  # the cluster extra is installed for tests
    image = tifffile.imread(SAMPLES / "nuclei_crowded.tif")
    model = load_named_model("nuclei")
    here = segment_to_zarr(image, model, tmp_path / "here.zarr", block_size=128, margin=64, device="cpu")
    there = segment_to_zarr(
        image, model, tmp_path / "there.zarr", block_size=128, margin=64, device="cpu", scheduler="local", n_workers=2
    )
    assert there.device == "dask cluster" and there.n_blocks == here.n_blocks > 4
    assert there.n_objects == here.n_objects > 50
    np.testing.assert_array_equal(read(there.path), read(here.path))
