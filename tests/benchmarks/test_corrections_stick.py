"""The corrections-stick and PhC-U373 benchmarks, run fast on tiny data with a tiny model."""

from __future__ import annotations

import numpy as np
import tifffile

import corrections_stick
import phc_u373
from napari_unet.core import save_model, segment
from napari_unet.core.training.metrics import match_objects


def _disks(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.uint16)
    for n, (cy, cx) in enumerate(rng.integers(8, 56, (6, 2)), start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 16) & (labels == 0)] = n
    return (labels > 0).astype(np.uint8) * 180 + 20, labels


def _data_set(folder, n=3):
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (folder / split / kind).mkdir(parents=True)
        for i in range(n):
            image, labels = _disks(i + (10 if split == "val" else 0))
            tifffile.imwrite(folder / split / "images" / f"f{i}.tif", image)
            tifffile.imwrite(folder / split / "labels" / f"f{i}.tif", labels)
    return folder


def test_corrections_stick_scores_the_corrected_image_and_the_others(tmp_path, tiny_model, capsys):
    data = _data_set(tmp_path / "set")
    model_file = save_model(tiny_model, tmp_path / "tiny.unet.safetensors")
    rows = corrections_stick.main(
        ["--data", str(data), "--model", str(model_file), "--images", "f0", "--steps", "2", "--patch-size", "32"]
    )
    (row,) = rows
    image, labels = _disks(10)
    assert row["image"] == "f0" and row["steps"] == 2
    assert row["f1_before"] == match_objects(labels, segment(image, tiny_model, device="cpu").labels).f1
    assert 0 <= row["f1_after"] <= 1 and 0 <= row["ap_after"] <= 1
    out = capsys.readouterr().out
    assert "f0" in out and "mean corrected F1 after" in out and "'patch_size': 32" in out


def test_phc_benchmark_resamples_labels_by_nearest_neighbour_and_scores_seg(tmp_path, tiny_model, capsys):
    image, labels = _disks(0)
    name, small, small_labels = phc_u373.scaled(("f", image, labels), 0.5)
    assert small.shape == small_labels.shape == (32, 32)
    assert set(np.unique(small_labels)) <= set(np.unique(labels))  # no new (interpolated) label values
    data = _data_set(tmp_path / "phc", n=2)
    model_file = save_model(tiny_model, tmp_path / "tiny.unet.safetensors")
    rows = phc_u373.main(["--data", str(data), "--model", str(model_file), "--steps", "2", "--scale", "0.5"])
    assert [r[0] for r in rows] == [0, 2, 2] and all(0 <= r[1] <= 1 for r in rows)
    assert "SEG" in capsys.readouterr().out
