"""The whole-image, block-by-block and batch paths give the same labels for the same InferenceOptions.

Pinning test: every path builds its predictions from one InferenceOptions object, so
device, tiles, precision and engine cannot drift between them. The shipped ``nuclei``
model on a crop of the crowded sample (many touching nuclei).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.core import InferenceOptions, load_named_model, segment, segment_files_to_zarr, segment_to_zarr
from napari_unet.core.batch.files import segment_files

SAMPLE = Path(__file__).resolve().parents[3] / "src" / "napari_unet" / "sample_data" / "nuclei_crowded.tif"
# at the image's own scale: resampled blocks agree with a resampled whole image only approximately
# (tests/core/inference/test_object_scale_real_data.py), so the exact promise is pinned without resampling
OPTIONS = InferenceOptions(device="cpu", tile_size=128, engine="torch", amp=False, diameter="model")


@pytest.fixture(scope="module")
def crowded() -> np.ndarray:
    return tifffile.imread(SAMPLE)[:200, :264]


@pytest.fixture(scope="module")
def model():
    return load_named_model("nuclei")


def _read(path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(Path(path) / "0"), mode="r")[...])


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to the numbering of the objects."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_instances_are_the_same_whole_image_block_and_batch(tmp_path, crowded, model):
    whole = segment(crowded, model, output_kind="instances", options=OPTIONS)
    assert whole.n_objects > 25
    one_block = segment_to_zarr(crowded, model, tmp_path / "one.zarr", block_size=512, options=OPTIONS)
    assert one_block.n_blocks == 1 and one_block.n_objects == whole.n_objects
    assert _same_partition(_read(one_block.path), whole.labels)
    six_blocks = segment_to_zarr(crowded, model, tmp_path / "six.zarr", block_size=128, options=OPTIONS)
    assert six_blocks.n_blocks == 6 and six_blocks.n_objects == whole.n_objects
    assert _same_partition(_read(six_blocks.path), whole.labels)

    tifffile.imwrite(tmp_path / "crowded.tif", crowded)
    rows = segment_files([tmp_path / "crowded.tif"], model=model, output_folder=tmp_path / "tiff", options=OPTIONS)
    assert [r.status for r in rows] == ["ok"] and rows[0].objects == whole.n_objects
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "tiff" / "crowded.tif"), whole.labels)

    rows = segment_files_to_zarr(
        [tmp_path / "crowded.tif"], model=model, output_folder=tmp_path / "zarr", block_size=512, options=OPTIONS
    )
    assert [r.status for r in rows] == ["ok"] and rows[0].objects == whole.n_objects
    assert _same_partition(_read(tmp_path / "zarr" / "crowded_labels.zarr"), whole.labels)


def test_classes_are_the_same_with_blocks_smaller_than_the_image(tmp_path, crowded, model):
    whole = segment(crowded, model, output_kind="classes", options=OPTIONS)
    blocks = segment_to_zarr(crowded, model, tmp_path / "c.zarr", output_kind="classes", block_size=64, options=OPTIONS)
    assert blocks.n_blocks == 4 * 5
    np.testing.assert_array_equal(_read(blocks.path), whole.labels)
    assert len(np.unique(whole.labels)) == 3  # background, interior and boundary all present


def test_probabilities_agree_on_every_path(tmp_path, crowded, model):
    whole = segment(crowded, model, output_kind="probabilities", options=OPTIONS).probabilities
    blocks = segment_to_zarr(
        crowded, model, tmp_path / "p.zarr", output_kind="probabilities", block_size=96, options=OPTIONS
    )
    np.testing.assert_allclose(_read(blocks.path), whole, atol=1e-5)
    tifffile.imwrite(tmp_path / "crowded.tif", crowded)
    segment_files(
        [tmp_path / "crowded.tif"],
        model=model,
        output_folder=tmp_path / "tiff",
        output_kind="probabilities",
        options=OPTIONS,
    )
    np.testing.assert_allclose(tifffile.imread(tmp_path / "tiff" / "crowded.tif"), whole, atol=1e-6)


def test_every_path_chooses_the_same_object_scale_on_auto(tmp_path, crowded, model):
    auto = InferenceOptions(device="cpu", tile_size=128, engine="torch", amp=False)
    enlarged = np.kron(crowded, np.ones((2, 2), crowded.dtype))  # objects twice the model's size
    whole = segment(enlarged, model, options=auto)
    blocks = segment_to_zarr(enlarged, model, tmp_path / "auto.zarr", block_size=128, options=auto)
    assert whole.object_scale.source == "auto" and whole.object_scale.factor < 0.8
    assert blocks.object_scale == whole.object_scale
