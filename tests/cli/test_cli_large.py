"""``napari-unet segment`` for large images: block by block into OME-Zarr, batch rules kept."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core import segment
from napari_unet.core.batch.files import InputError
from napari_unet.core.batch.zarr_files import expand_large_inputs, zarr_output_paths
from napari_unet.core.io.ome_zarr import open_result

zarr = pytest.importorskip("zarr")


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 255, (150, 130), dtype=np.uint8)


def test_a_tiff_into_one_zarr_equals_segmenting_it_whole(tmp_path, image, tiny_model, tiny_model_file, capsys):
    tifffile.imwrite(tmp_path / "slide.tif", image, tile=(64, 64))
    code = main(
        [
            "segment",
            str(tmp_path / "slide.tif"),
            "--model",
            str(tiny_model_file),
            "-o",
            str(tmp_path / "slide.zarr"),
            "--kind",
            "classes",
            "--block-size",
            "64",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    assert "slide.tif -> " in capsys.readouterr().out
    written = np.asarray(open_result(tmp_path / "slide.zarr")[0][...])
    np.testing.assert_array_equal(written, segment(image, tiny_model, output_kind="classes", device="cpu").labels)


def test_a_folder_of_tiff_and_zarr_keeps_going_and_skips_what_is_done(tmp_path, image, tiny_model_file, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "a.tif", image)
    zarr.create_array(str(inputs / "b.zarr"), shape=image.shape, chunks=(64, 64), dtype=image.dtype)[...] = image
    broken = inputs / "c.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("not json")
    out = tmp_path / "out"
    args = [
        "segment",
        str(inputs),
        "--model",
        str(tiny_model_file),
        "-o",
        str(out),
        "--kind",
        "classes",
        "--block-size",
        "64",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(args) == 1  # one input failed
    captured = capsys.readouterr()
    assert "2 segmented, 0 skipped, 1 failed" in captured.out
    assert "c.zarr" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a_classes.zarr", "b_classes.zarr", "napari-unet-summary.csv"]
    rows = list(csv.DictReader((out / "napari-unet-summary.csv").read_text().splitlines()))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    broken.rename(tmp_path / "c.zarr")
    assert main(args) == 0
    assert "0 segmented, 2 skipped, 0 failed" in capsys.readouterr().out


def test_a_result_never_replaces_an_input(tmp_path, image):
    source = tmp_path / "x_labels.zarr"
    zarr.create_array(str(source), shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    with pytest.raises(InputError, match="would replace the input image"):
        zarr_output_paths([source], tmp_path / "x_labels.zarr")
    with pytest.raises(InputError, match="output folder"):
        zarr_output_paths([source, source], tmp_path / "y.zarr")


def test_inputs_accept_ome_zarr_folders_and_patterns(tmp_path, image):
    tifffile.imwrite(tmp_path / "a.ome.tif", image)
    zarr.create_array(str(tmp_path / "b.ome.zarr"), shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    (tmp_path / "notes.txt").write_text("not an image")
    found = expand_large_inputs([str(tmp_path / "*")])
    assert [p.name for p in found] == ["a.ome.tif", "b.ome.zarr"]
    assert [p.name for p in zarr_output_paths(found, tmp_path / "out")] == ["a_labels.zarr", "b_labels.zarr"]
    with pytest.raises(InputError, match="no such file"):
        expand_large_inputs([str(tmp_path / "missing.zarr")])


def test_bad_block_size_is_refused_before_any_work(tmp_path, image, tiny_model_file, capsys):
    tifffile.imwrite(tmp_path / "a.tif", image)
    code = main(
        [
            "segment",
            str(tmp_path / "a.tif"),
            "--model",
            str(tiny_model_file),
            "-o",
            str(tmp_path / "a.zarr"),
            "--block-size",
            "8",
        ]
    )
    assert code == 2
    assert "--block-size" in capsys.readouterr().err
    assert not (tmp_path / "a.zarr").exists()


def test_seed_threshold_reaches_block_by_block_outputs(tmp_path, nuclei_crop):
    crop, _ = nuclei_crop
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    counts = []
    for option in ([], ["--seed-threshold", "0.99"]):
        out = tmp_path / f"crop{len(option)}.zarr"
        args = ["segment", str(tmp_path / "crop.tif"), "--model", "nuclei", "-o", str(out), "--block-size", "64"]
        assert main([*args, "--device", "cpu", "--quiet", *option]) == 0
        counts.append(len(np.unique(np.asarray(open_result(out)[0][...]))) - 1)
    assert counts[1] < counts[0]  # 0.99 instead of the model's 0.6: fewer seeds, fewer nuclei
