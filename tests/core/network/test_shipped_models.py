"""Every shipped model loads offline, has a model card, and works on its own kind of image.

The crops come from images the models were not trained on (val splits and the
bundled sample, itself a DSB 2018 val image); the floors are well below what
the models reach on them, so a broken model file, a wrong normalisation or a
post-processing regression fails while ordinary numeric noise does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.core import load_named_model, segment
from napari_unet.core.network.registry import shipped_models
from napari_unet.core.training.metrics import match_objects

DOCS = Path(__file__).resolve().parents[3] / "docs" / "models"
SAMPLES = Path(__file__).resolve().parents[3] / "src" / "napari_unet" / "sample_data"
EXPECTED = {"nuclei", "cells", "phase", "em"}


def foreground_iou(truth: np.ndarray, predicted: np.ndarray) -> float:
    a, b = truth > 0, predicted > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_the_default_models_are_shipped_small_and_described():
    models = {m.key: m for m in shipped_models()}
    assert EXPECTED <= set(models)
    for key, shipped in models.items():
        assert shipped.path.stat().st_size < 8 * 1024**2, f"{key} is too large for the wheel"
        model = load_named_model(key)
        history = model.description.training_history
        assert history and history[-1]["script"] == "scripts/train_default_models.py"
        assert history[-1]["config"] == key
        assert model.description.name == shipped.title


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_every_shipped_model_has_a_model_card(key):
    card = (DOCS / f"{key}.md").read_text(encoding="utf-8")
    title = load_named_model(key).description.name
    assert title in card
    for section in ("Intended use", "Training data", "Accuracy", "limits"):
        assert section.lower() in card.lower(), f"{key}.md lacks a section on {section}"
    assert f"{key}.unet.safetensors" in card


@pytest.mark.slow
def test_nuclei_model_finds_the_nuclei_of_the_bundled_sample():
    image = tifffile.imread(SAMPLES / "nuclei.tif")[:256, :256]
    truth = tifffile.imread(SAMPLES / "nuclei_labels.tif")[:256, :256]
    result = segment(image, load_named_model("nuclei"), output="instances", device="cpu")
    assert foreground_iou(truth, result.labels) > 0.7
    assert match_objects(truth, result.labels, threshold=0.5).f1 > 0.7


@pytest.mark.slow
def test_cells_model_outlines_whole_cells(shared_data):
    folder = shared_data / "ctc_fluo_c2dl_msc" / "val"
    image = tifffile.imread(folder / "images" / "01_t034.tif")[:512, 480:]
    truth = tifffile.imread(folder / "labels" / "01_t034.tif")[:512, 480:]
    result = segment(image, load_named_model("cells"), output="instances", device="cpu")
    assert foreground_iou(truth, result.labels) > 0.55
    assert match_objects(truth, result.labels, threshold=0.5).f1 >= 0.5


@pytest.mark.slow
def test_phase_model_outlines_phase_contrast_cells_the_fluorescence_model_cannot(shared_data):
    folder = shared_data / "ctc_phc_c2dh_u373" / "val"
    image = tifffile.imread(folder / "images" / "01_t100.tif")
    truth = tifffile.imread(folder / "labels" / "01_t100.tif")
    phase = segment(image, load_named_model("phase"), output="instances", device="cpu").labels
    cells = segment(image, load_named_model("cells"), output="instances", device="cpu").labels
    assert match_objects(truth, phase, threshold=0.5).f1 >= 0.8
    assert foreground_iou(truth, phase) > 0.8
    assert match_objects(truth, cells, threshold=0.5).f1 < 0.5  # what a user had before: no phase model


@pytest.mark.slow
def test_em_model_separates_membranes_from_cell_interiors(shared_data):
    folder = shared_data / "isbi2012_em" / "val"
    image = tifffile.imread(folder / "images" / "slice_20.tif")[:256, :256]
    cells = tifffile.imread(folder / "labels" / "slice_20.tif")[:256, :256] > 0
    model = load_named_model("em")
    classes = segment(image, model, output="classes", device="cpu").labels
    assert model.description.class_names == ["membrane", "cell"]
    assert (classes == cells).mean() > 0.85
    predicted_cells = classes == 1
    assert (predicted_cells & cells).sum() / (predicted_cells | cells).sum() > 0.8
    # instances are the connected cell interiors, membranes 0
    instances = segment(image, model, output="instances", device="cpu").labels
    assert instances[~predicted_cells].max() == 0
    assert instances.max() > 20


def test_the_nuclei_model_comes_first_so_widgets_start_with_it():
    # the bundled samples are nuclei: a new user's first Segment must use the nuclei model
    assert shipped_models()[0].key == "nuclei"
