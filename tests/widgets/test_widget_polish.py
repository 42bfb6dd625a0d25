"""What napari users expect of a widget: tooltips, shortcuts, reasons for disabled buttons, outlines.

Also: a multichannel-looking image segmented as a stack is reported (issue 8).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QWidget  # noqa: E402

from napari_unet._widgets import segment_widget as sw  # noqa: E402
from napari_unet._widgets.forms import shortcuts  # noqa: E402
from napari_unet._widgets.layers.channel_hint import channel_notice  # noqa: E402
from napari_unet.core.inference.layout import infer_layout  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30_000
WIDGETS = ("Segment", "Fine-tune", "Export")


@pytest.fixture(autouse=True)
def _seeded():
    import torch

    torch.manual_seed(1)


@pytest.fixture
def docked(make_napari_viewer, tiny_model_file):
    """A shown viewer with the three widgets docked and the tiny model in use."""
    viewer = make_napari_viewer(show=True)
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-unet-toolkit", name)[1] for name in WIDGETS}
    assert widgets["Segment"].load_model_file(tiny_model_file)
    return viewer, widgets


def _controls(widget: QWidget) -> list[QWidget]:
    """The widgets a user can click, type into or choose from, that are visible in ``widget``."""
    found = []
    for child in widget.findChildren(QWidget):
        if not isinstance(child, (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit)):
            continue
        if isinstance(child, QLineEdit) and isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
            continue  # the text field inside a spin box: the spin box has the tooltip
        if child.isVisibleTo(widget):
            found.append(child)
    return found


def _name(control: QWidget) -> str:
    text = control.text() if hasattr(control, "text") else ""
    return f"{type(control).__name__} {text!r} {control.objectName()!r}"


@pytest.mark.parametrize("name", WIDGETS)
def test_every_visible_control_has_a_tooltip(docked, name):
    viewer, widgets = docked
    widget = widgets[name]
    viewer.add_image(np.zeros((32, 32), np.uint8), name="image")
    for section in [w for w in widget.findChildren(QWidget) if type(w).__name__ in ("QCollapsible", "TrainingOptions")]:
        section.expand(animate=False)
    controls = _controls(widget)
    assert len(controls) >= 5
    missing = [_name(control) for control in controls if not control.toolTip().strip()]
    assert not missing, f"{name}: controls without a tooltip: {missing}"


def test_shortcuts_are_shown_in_the_tooltips(docked):
    _viewer, widgets = docked
    segment, tune = widgets["Segment"], widgets["Fine-tune"]
    for button, keys in (
        (segment.segment_button, shortcuts.SEGMENT),
        (segment.cancel_button, shortcuts.CANCEL_SEGMENT),
        (tune.finetune_button, shortcuts.FINE_TUNE),
        (tune.stop_button, shortcuts.STOP_TRAINING),
    ):
        assert button.toolTip().endswith(f"({shortcuts.shortcut_text(button)})"), button.toolTip()
        assert [s for s in (segment.shortcuts + tune.shortcuts) if s.key().toString() == keys]
    keys = [s.key().toString() for s in segment.shortcuts + tune.shortcuts]
    assert len(set(keys)) == 4, "two buttons share a shortcut"


def test_the_segment_shortcut_segments_and_does_nothing_while_disabled(docked, qtbot):
    viewer, widgets = docked
    segment = widgets["Segment"]
    window = viewer.window._qt_window
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    started = []
    segment.segment_button.clicked.connect(lambda: started.append(True))
    qtbot.keyClick(window, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert started == [] and not segment.is_running  # no image: the button is disabled, the keys do nothing

    viewer.add_image(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8), name="image")
    assert segment.segment_button.isEnabled()
    qtbot.keyClick(window, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert started == [True] and segment.worker is not None
    qtbot.waitUntil(lambda: not segment.is_running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["image", "image [U-Net]"]


def test_the_stop_shortcut_stops_training(docked, qtbot, nuclei_crop):
    viewer, widgets = docked
    tune = widgets["Fine-tune"]
    image, truth = nuclei_crop
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="truth")
    tune.pairs.refresh()
    tune.budget_spin.setValue(0)
    tune.options.steps_spin.setValue(100_000)
    tune.options.validation_spin.setValue(0)
    window = viewer.window._qt_window
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    ctrl_shift = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(window, Qt.Key.Key_F, ctrl_shift)
    assert tune.is_running
    qtbot.waitUntil(lambda: len(tune.plot.points) >= 1, timeout=TIMEOUT_MS)
    qtbot.keyClick(window, Qt.Key.Key_K, ctrl_shift)
    qtbot.waitUntil(lambda: not tune.is_running, timeout=5000)
    assert tune.result is not None and tune.result.stopped


def test_disabled_buttons_say_why(docked):
    _viewer, widgets = docked
    segment, tune, export = widgets["Segment"], widgets["Fine-tune"], widgets["Export"]
    assert not segment.segment_button.isEnabled() and "image layer" in segment.segment_button.toolTip()
    assert not segment.cancel_button.isEnabled() and "no segmentation is running" in segment.cancel_button.toolTip()
    assert not tune.stop_button.isEnabled() and "no training is running" in tune.stop_button.toolTip()
    assert not tune.accept_button.isEnabled() and "run Fine-tune first" in tune.accept_button.toolTip()
    assert not tune.save_button.isEnabled() and "run Fine-tune first" in tune.save_button.toolTip()
    assert not export.cancel_button.isEnabled() and "no export is running" in export.cancel_button.toolTip()


def test_long_names_fit_the_docks(make_napari_viewer, tiny_model_file, tmp_path, qtbot):
    """A model file and layers with long names, chosen before the docks are drawn, leave every dock's content in view.

    The model chooser used to size itself to the longest name when first shown, and a label
    holding a long layer name could not wrap it: the Segment dock then ran past the window's
    right edge (Remove, Cancel and the ends of wrapped lines cut off), the Fine-tune dock's
    content past its own edge.
    """
    long = "time_lapse_of_mesenchymal_stem_cells_" * 3
    model = tmp_path / f"{long}.unet.safetensors"
    model.write_bytes(tiny_model_file.read_bytes())
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.zeros((32, 32), np.float32), name=long)
    viewer.add_labels(np.zeros((32, 32), np.int32), name=f"{long} labels")
    viewer.add_shapes(name=f"{long} reviewed")
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-unet-toolkit", name)[1] for name in WIDGETS}
    assert widgets["Segment"].load_model_file(model)
    assert long in widgets["Segment"].model_combo.currentText()
    assert long in widgets["Fine-tune"].pair_label.text()
    window = viewer.window._qt_window
    window.resize(1500, 950)
    viewer.show()

    def in_view() -> bool:
        return all(
            w._scroll.widget().minimumSizeHint().width() <= w._scroll.viewport().width() for w in widgets.values()
        )

    qtbot.waitUntil(in_view, timeout=TIMEOUT_MS)
    for name, widget in widgets.items():
        right = widget.mapTo(window, widget.rect().topRight()).x()
        assert right <= window.width(), f"{name} dock ends at x={right}, past the window's {window.width()}"
        for combo in widget.findChildren(QComboBox):
            assert combo.minimumSizeHint().width() < combo.fontMetrics().horizontalAdvance(long), (
                name,
                combo.currentText(),
            )


@pytest.mark.parametrize("order", [("Segment", "Fine-tune"), ("Fine-tune", "Segment")])
def test_segment_shows_its_whole_form_beside_fine_tune_and_its_done_line(
    make_napari_viewer, tiny_model_file, qtbot, order
):
    """Opened one after the other (as from the Plugins menu), the first dock used to keep the spare height:
    Segment 606 px for 368 px of form while Fine-tune's verdict and buttons scrolled in 300 px, or (Fine-tune
    first) Segment's own Segment button scrolled out of its 180 px."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    docked = {}
    for name in order:
        docked[name] = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", name)[1]
        qtbot.waitUntil(lambda: docked[name].height() > 0, timeout=TIMEOUT_MS)  # noqa: B023 - waited for at once
        qtbot.wait(200)  # laid out before the next dock comes
    segment, tune = docked["Segment"], docked["Fine-tune"]
    assert segment.load_model_file(tiny_model_file)
    form = segment._scroll.widget()

    def shared() -> bool:
        return segment._scroll.viewport().height() >= form.sizeHint().height() and tune.height() > 400

    qtbot.waitUntil(shared, timeout=TIMEOUT_MS)

    viewer.add_image(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8), name="image")
    segment.segment_button.click()
    qtbot.waitUntil(lambda: not segment.is_running, timeout=TIMEOUT_MS)
    assert segment.status_label.text().startswith("Done:")
    viewport = segment._scroll.viewport()

    def done_line_in_view() -> bool:
        top = segment.status_label.mapTo(viewport, segment.status_label.rect().topLeft()).y()
        return top >= 0 and top + segment.status_label.height() <= viewport.height()

    qtbot.waitUntil(done_line_in_view, timeout=5000)


def test_show_outlines_draws_the_result_as_contours(docked, qtbot):
    viewer, widgets = docked
    segment = widgets["Segment"]
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8), name="image")
    segment.outline_check.setChecked(True)
    segment.segment_button.click()
    qtbot.waitUntil(lambda: not segment.is_running, timeout=TIMEOUT_MS)
    labels = viewer.layers["image [U-Net]"]
    assert labels.contour == 1
    segment.outline_check.setChecked(False)  # applies to the existing result at once
    assert labels.contour == 0


def test_also_add_probability_layers(docked, qtbot):
    viewer, widgets = docked
    segment = widgets["Segment"]
    image = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    viewer.add_image(image, name="image")
    segment.probabilities_check.setChecked(True)
    segment.segment_button.click()
    qtbot.waitUntil(lambda: not segment.is_running, timeout=TIMEOUT_MS)
    names = [layer.name for layer in viewer.layers]
    class_names = segment.session.model.description.class_names
    assert names[-1] == "image [U-Net]", "the Labels layer (what the user corrects) must stay on top"
    probabilities = [viewer.layers[f"image [U-Net probabilities] {c}"] for c in class_names]
    total = sum(np.asarray(layer.data, np.float64) for layer in probabilities)
    np.testing.assert_allclose(total, 1.0, atol=1e-4)
    # "Probabilities" output makes the layers itself: the option does not apply
    segment.output_combo.setCurrentIndex(segment.output_combo.findData("probabilities"))
    assert not segment.probabilities_check.isEnabled() and "already" in segment.probabilities_check.toolTip()


def test_channels_segmented_as_a_stack_are_reported(docked, qtbot, monkeypatch):
    viewer, widgets = docked
    segment = widgets["Segment"]
    shown: list[str] = []
    monkeypatch.setattr(sw, "show_info", shown.append)
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (3, 40, 40), dtype=np.uint8), name="three channels")
    segment.segment_button.click()
    qtbot.waitUntil(lambda: not segment.is_running, timeout=TIMEOUT_MS)
    assert viewer.layers["three channels [U-Net]"].data.shape == (3, 40, 40)
    (notice,) = [text for text in shown if "channels" in text]
    assert "axis 0" in notice and "Split Stack" in notice
    assert "Note:" in segment.status_label.text()

    shown.clear()
    segment.image_layer = viewer.add_image(np.zeros((40, 40), np.uint8), name="plain")
    segment.segment_button.click()
    qtbot.waitUntil(lambda: not segment.is_running, timeout=TIMEOUT_MS)
    assert not [text for text in shown if "channels" in text]
    assert "Note:" not in segment.status_label.text()


def test_channel_notice_only_for_short_axes_the_model_cannot_take():
    assert (
        channel_notice(infer_layout((30, 64, 64), in_channels=1), in_channels=1, layer_name="z", model_name="m") == ""
    )  # 30 planes: a Z stack, not channels
    assert channel_notice(infer_layout((64, 64), in_channels=1), in_channels=1, layer_name="p", model_name="m") == ""
    named = infer_layout((2, 64, 64), in_channels=2, channel_axis=0)
    assert channel_notice(named, in_channels=2, layer_name="c", model_name="m") == ""
    text = channel_notice(infer_layout((4, 64, 64), in_channels=1), in_channels=1, layer_name="c", model_name="m")
    assert "4 entries along axis 0" in text and "Split Stack" in text
