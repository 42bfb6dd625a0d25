"""Rounds of Segment, correct, Fine-tune in one viewer (issue 17): the right pair, edits kept, models kept."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from job_gates import Gate  # noqa: E402
from napari_unet._widgets import finetune_widget as fw  # noqa: E402
from napari_unet._widgets import segment_widget as sw  # noqa: E402
from napari_unet._widgets.layers.proxies import unwrap_proxy  # noqa: E402
from napari_unet._widgets.layers.session import session_for  # noqa: E402
from napari_unet.core import load_model  # noqa: E402
from napari_unet.core.training import finetune_job as fj  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def _seeded_model_weights():
    import torch

    torch.manual_seed(1)


@pytest.fixture
def both(make_napari_viewer, tiny_model_file):
    """A viewer with Segment and Fine-tune docked, sharing the tiny model; fast training settings."""
    viewer = make_napari_viewer()
    _d, segment = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    assert segment.load_model_file(tiny_model_file)
    _d, finetune = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    finetune.budget_spin.setValue(0)
    finetune.options.steps_spin.setValue(4)
    finetune.options.patch_spin.setValue(32)
    finetune.options.batch_spin.setValue(2)
    finetune.options.validate_spin.setValue(2)
    finetune.options.validation_spin.setValue(0)
    return viewer, segment, finetune


@pytest.fixture
def infos(monkeypatch) -> list[str]:
    shown: list[str] = []
    monkeypatch.setattr(sw, "show_info", shown.append)
    return shown


def run_segment(qtbot, widget) -> None:
    assert widget.segment_button.isEnabled(), widget.segment_button.toolTip()
    widget.segment_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def run_finetune(qtbot, widget) -> None:
    assert widget.finetune_button.isEnabled(), widget.finetune_button.toolTip()
    widget.finetune_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def result_of(viewer, image):
    (layer,) = session_for(viewer).results.find(viewer, image, "labels")
    return layer


# ------------------------------------------------------------------ 6: room for new labels


def test_result_layers_take_label_256_and_export_stays_small(make_napari_viewer, tmp_path):
    from napari_unet._widgets.layers.results import make_target
    from napari_unet.core import SegmentationResult
    from napari_unet.core.inference.layout import infer_layout
    from napari_unet.core.io.export import ExportItem, export_files

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 32), np.uint8), name="few")
    found = np.zeros((32, 32), np.uint8)
    found[2:6, 2:6], found[10:14, 10:14] = 1, 2  # two objects: uint8 would fit them
    result = SegmentationResult("instances", found, None, ["background", "a", "b"], 2, "cpu", 0.1)
    target = make_target(image, infer_layout((32, 32), in_channels=1))
    (labels,) = session_for(viewer).results.show(viewer, target, result)
    assert labels.data.dtype.itemsize >= 2
    for label in range(3, 301):  # the user adds objects up to the 300th
        labels.paint((20 + label % 10, label % 30), label, refresh=False)
    assert labels.data.max() == 300
    # export still writes the smallest type that fits the labels it holds
    (written,) = export_files([ExportItem(tmp_path / "few_labels.tif", found, "labels", "YX", (1.0, 1.0))])
    assert written.dtype == np.uint8
    (written,) = export_files([ExportItem(tmp_path / "more_labels.tif", labels.data, "labels", "YX", (1.0, 1.0))])
    assert written.dtype == np.uint16


# ---------------------------------------------------------------- 5: edits are never lost


def test_segment_again_keeps_the_corrected_layer_and_writes_a_new_one(qtbot, both, nuclei_crop, infos):
    viewer, segment, finetune = both
    image = viewer.add_image(nuclei_crop[0], name="nuclei")
    run_segment(qtbot, segment)
    first = result_of(viewer, image)
    first.paint((10, 10), 999, refresh=False)  # a brush stroke, with its undo step
    edited = first.data.copy()

    run_segment(qtbot, segment)
    assert first in viewer.layers
    np.testing.assert_array_equal(first.data, edited)  # the corrections are all there
    second = result_of(viewer, image)
    assert unwrap_proxy(second) is not unwrap_proxy(first)
    # napari selected the new layer; Fine-tune still pairs the image with the corrected one
    assert unwrap_proxy(viewer.layers.selection.active) is unwrap_proxy(second)
    assert unwrap_proxy(finetune.pairs.rows[0].labels) is unwrap_proxy(first)
    assert second.name == "nuclei [U-Net] (2)"
    assert second.data[10, 10] != 999
    assert any("corrections" in m and "nuclei [U-Net] (2)" in m for m in infos)
    first.undo()  # napari's undo still works on the kept layer
    assert first.data[10, 10] != 999

    # a result nobody edited is replaced in place, as before
    run_segment(qtbot, segment)
    assert unwrap_proxy(result_of(viewer, image)) is unwrap_proxy(second)
    assert len([layer for layer in viewer.layers if "[U-Net]" in layer.name]) == 2


def test_segment_is_disabled_while_fine_tune_trains_on_the_layer(qtbot, both, nuclei_crop, monkeypatch):
    viewer, segment, finetune = both
    image = viewer.add_image(nuclei_crop[0], name="nuclei")
    run_segment(qtbot, segment)
    labels = result_of(viewer, image)
    labels.data = nuclei_crop[1].astype(labels.data.dtype)  # the corrected result
    finetune.options.steps_spin.setValue(500)
    gate = Gate(fj.train_job)
    monkeypatch.setattr(fj, "train_job", gate.job)
    finetune.finetune_button.click()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT_MS)

    assert not segment.segment_button.isEnabled()
    assert "Fine-tune is training on 'nuclei [U-Net]'" in segment.segment_button.toolTip()
    assert segment.segment() is None

    # after Segment wrote a new result layer, the image is still being trained on: still disabled
    segment.session.results.bind(image, "labels", [viewer.add_labels(np.zeros_like(nuclei_crop[1]), name="x")])
    segment._update_state()
    assert not segment.segment_button.isEnabled()

    finetune.stop()
    gate.release.set()
    qtbot.waitUntil(lambda: not finetune.is_running, timeout=TIMEOUT_MS)
    assert segment.segment_button.isEnabled()
    run_segment(qtbot, segment)  # trained on, so kept: the new result goes to a new layer
    assert labels in viewer.layers
    np.testing.assert_array_equal(labels.data, nuclei_crop[1])


def test_corrections_of_every_round_are_trained_on_and_can_be_saved(qtbot, both, nuclei_crop, monkeypatch, tmp_path):
    viewer, segment, finetune = both
    image, truth = nuclei_crop
    requests = []
    original = fw.finetune_job

    def recording(request, **kwargs):
        requests.append(request)
        return original(request, **kwargs)

    monkeypatch.setattr(fw, "finetune_job", recording)
    first = viewer.add_image(image, name="first")
    viewer.add_labels(truth.copy(), name="first corrected")
    run_finetune(qtbot, finetune)
    assert [item.name for item in requests[-1].images] == ["first"]
    finetune.accept_button.click()

    viewer.add_image(image[::-1].copy(), name="second")
    viewer.add_labels(truth[::-1].copy(), name="second corrected")
    assert finetune.pairs.rows[0].image.name == "second"
    assert "1 earlier image" in finetune.pair_label.text()
    viewer.layers.remove(first)  # the first round's layers can go: their corrections are kept
    run_finetune(qtbot, finetune)
    assert [item.name for item in requests[-1].images] == ["second", "first"]
    n_objects = len(np.unique(truth)) - 1
    texts = [finetune.set_list.item(i).text() for i in range(finetune.set_list.count())]
    assert texts == [f"first ({n_objects} objects)", f"second ({n_objects} objects)"]

    written = finetune.save_training_set_to(tmp_path / "set")
    assert sorted(p.relative_to(tmp_path / "set").as_posix() for p in written) == [
        "images/first.tif",
        "images/second.tif",
        "labels/first.tif",
        "labels/second.tif",
    ]
    _d, other = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune", tabify=True)
    finetune.session.corrections.clear()
    assert other.set_list.count() == 0
    assert other.load_training_set_from(tmp_path / "set") == 2
    loaded = {c.name: c for c in other.session.corrections.items()}
    np.testing.assert_array_equal(loaded["second"].annotated.labels, truth[::-1])
    np.testing.assert_array_equal(loaded["first"].annotated.image, image)
    assert other.set_list.count() == 2


# ------------------------------------------------------------------- 4: the right pair


def test_a_selected_labels_layer_brings_its_image_and_hidden_images_are_not_chosen(
    qtbot, make_napari_viewer, tiny_model_file, nuclei_crop
):
    viewer = make_napari_viewer()
    session_for(viewer).set_model(load_model(tiny_model_file), str(tiny_model_file))
    image, truth = nuclei_crop
    shown = viewer.add_image(image, name="shown", translate=(40.0, 60.0))
    painted = viewer.add_labels(truth.copy(), name="shown painted", translate=(40.0, 60.0))
    viewer.add_image(image[::-1].copy(), name="hidden on top", visible=False)
    viewer.layers.selection.active = painted

    _d, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    row = widget.pairs.rows[0]
    assert unwrap_proxy(row.image) is unwrap_proxy(shown)
    assert unwrap_proxy(row.labels) is unwrap_proxy(painted)
    assert widget.pair_label.text() == "Trains on 'shown' with 'shown painted'."

    # nothing selected: the top-most *visible* image, never the hidden one
    viewer.layers.selection.clear()
    _d, fresh = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune", tabify=True)
    assert fresh.pairs.rows[0].image.name == "shown"


def test_pairs_follow_the_selected_result_layer_and_the_preview_is_drawn_on_its_image(
    qtbot, both, nuclei_crop, monkeypatch
):
    viewer, segment, finetune = both
    image, truth = nuclei_crop
    a = viewer.add_image(image, name="a", translate=(0.0, 0.0))
    run_segment(qtbot, segment)
    b = viewer.add_image(image[::-1].copy(), name="b", translate=(200.0, 0.0))
    segment.image_layer = b
    run_segment(qtbot, segment)
    result_a, result_b = result_of(viewer, a), result_of(viewer, b)
    viewer.layers.selection.active = result_b
    assert unwrap_proxy(finetune.pairs.rows[0].image) is unwrap_proxy(b)
    viewer.layers.selection.active = result_a  # the user picks the layer they corrected
    row = finetune.pairs.rows[0]
    assert unwrap_proxy(row.image) is unwrap_proxy(a)
    assert unwrap_proxy(row.labels) is unwrap_proxy(result_a)

    result_a.data = truth.astype(result_a.data.dtype)
    monkeypatch.setattr(fw, "PREVIEW_SECONDS", 0.0)
    finetune.keep_preview_check.setChecked(True)
    run_finetune(qtbot, finetune)
    (preview,) = [layer for layer in viewer.layers if "preview" in layer.name]
    assert preview.name == "a [U-Net preview]"
    np.testing.assert_allclose(preview.translate, a.translate)


# -------------------------------------------------------------- 7: accepted models are kept


def test_an_accepted_model_is_saved_listed_and_removable(qtbot, both, nuclei_crop, monkeypatch, _private_models_folder):
    from qtpy.QtWidgets import QMessageBox

    from napari_unet.core.network.user_models import user_models

    viewer, segment, finetune = both
    viewer.add_image(nuclei_crop[0], name="nuclei")
    viewer.add_labels(nuclei_crop[1].copy(), name="nuclei corrected")
    run_finetune(qtbot, finetune)
    finetune.accept_button.click()

    (saved,) = user_models()
    assert saved.path.parent == _private_models_folder
    assert finetune.session.source == str(saved.path)
    reloaded = load_model(saved.path)
    assert reloaded.description.name == "tiny test model (fine-tuned)"
    assert "Fine-tuned from" in reloaded.description.description and "nuclei" in reloaded.description.description
    last = reloaded.description.training_history[-1]
    assert last["layers"] == ["nuclei"] and "verdict" in last and last["base_model"]
    assert segment.model_combo.findData(str(saved.path)) >= 0
    assert segment.model_combo.currentData() == str(saved.path)
    assert segment.remove_model_button.isEnabled()

    segment.model_combo.setCurrentIndex(0)  # a shipped model: never removable
    assert not segment.remove_model_button.isEnabled()
    assert not segment.remove_saved_model(str(segment.model_combo.itemData(0)))

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    assert not segment.remove_saved_model(str(saved.path))
    assert saved.path.exists()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert segment.remove_saved_model(str(saved.path))
    assert not saved.path.exists() and user_models() == []


def test_an_unwritable_models_folder_is_a_message_and_the_model_stays_in_use(
    qtbot, both, nuclei_crop, monkeypatch, tmp_path
):
    viewer, _segment, finetune = both
    blocker = tmp_path / "not a folder"
    blocker.write_text("")
    monkeypatch.setenv("NAPARI_UNET_MODELS_DIR", str(blocker / "models"))
    shown: list[str] = []
    monkeypatch.setattr(fw, "show_error", shown.append)
    viewer.add_image(nuclei_crop[0], name="nuclei")
    viewer.add_labels(nuclei_crop[1].copy(), name="nuclei corrected")
    run_finetune(qtbot, finetune)
    finetune.accept_button.click()
    assert finetune.session.model is finetune.result.model
    assert finetune.session.source.endswith("(not saved)")
    assert len(shown) == 1 and "could not be saved" in shown[0] and "not a folder" in shown[0]
    assert finetune.save_button.isEnabled()


def test_a_new_image_of_another_shape_never_keeps_the_labels_of_the_last_one(qtbot, both, nuclei_crop):
    viewer, segment, finetune = both
    image, truth = nuclei_crop
    viewer.add_image(image, name="a")
    viewer.add_labels(truth.copy(), name="a corrected")  # edited (made by hand)
    assert finetune.pairs.rows[0].labels.name == "a corrected"
    b = viewer.add_image(np.zeros((64, 80), np.uint8), name="b")
    assert finetune.pairs.rows[0].image.name == "b"
    assert finetune.pairs.rows[0].labels is None
    segment.image_layer = b
    run_segment(qtbot, segment)
    assert finetune.pairs.rows[0].labels.name == "b [U-Net]"


def test_export_of_the_kept_corrected_layer_writes_that_layer(qtbot, both, nuclei_crop, tmp_path):
    import tifffile

    viewer, segment, _ = both
    image = viewer.add_image(nuclei_crop[0], name="nuclei")
    run_segment(qtbot, segment)
    corrected = result_of(viewer, image)
    corrected.paint((3, 3), 777, refresh=False)
    run_segment(qtbot, segment)
    _d, export = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Export", tabify=True)
    export.choose_layer(corrected)
    export.folder_edit.setText(str(tmp_path))
    export.export_button.click()
    qtbot.waitUntil(lambda: not export.is_running, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "nuclei_labels.tif"), corrected.data)
