"""benchmarks/object_size.py: magnified copies of val images, and its table on two images."""

from __future__ import annotations

import numpy as np

import object_size as bench
from napari_unet.core import load_named_model


def test_magnified_images_and_labels_keep_their_objects(nuclei_crop):
    image, labels = nuclei_crop
    big, big_labels = bench.magnified(image, labels, 3.0)
    assert big.shape == big_labels.shape == (384, 384)
    assert set(np.unique(big_labels)) == set(np.unique(labels))
    small, small_labels = bench.magnified(image, labels, 0.5)
    assert small.shape == small_labels.shape == (64, 64)
    assert set(np.unique(small_labels)) <= set(np.unique(labels))


def test_the_table_scores_both_settings_at_every_magnification(shared_data, capsys):
    pairs = bench.val_pairs(shared_data / "dsb2018_nuclei", only_gray=True, limit=2)
    results = bench.run(load_named_model("nuclei"), pairs, (0.5, 1.0), ("model", "auto"), "cpu")
    assert sorted(results) == [(0.5, "auto"), (0.5, "model"), (1.0, "auto"), (1.0, "model")]
    for row in results.values():
        assert 0.0 <= row["ap50"] <= 1.0 and 0.0 <= row["seg"] <= 1.0 and row["seconds"] > 0
    assert results[(0.5, "model")]["median_factor"] == 1.0
    assert results[(0.5, "auto")]["median_factor"] > 1.2  # small nuclei: enlarged
    bench.print_table(results, (0.5, 1.0), ("model", "auto"))
    assert "| 0.5x |" in capsys.readouterr().out
