"""The Segment widget's object size: Auto or a diameter, Measure on the canvas, the size a run used."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._widgets import segment_widget as sw  # noqa: E402
from napari_unet._widgets.forms import diameter_field  # noqa: E402
from napari_unet._widgets.layers.proxies import unwrap_proxy  # noqa: E402
from napari_unet._widgets.layers.results import RESULT_KEY  # noqa: E402
from napari_unet.core.network.object_size import median_diameter  # noqa: E402

TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    assert isinstance(widget, sw.SegmentWidget)
    return viewer, widget


@pytest.fixture
def messages(monkeypatch):
    shown: dict[str, list[str]] = {"info": [], "error": []}
    monkeypatch.setattr(diameter_field, "show_info", shown["info"].append)
    monkeypatch.setattr(diameter_field, "show_error", shown["error"].append)
    return shown


def test_the_field_is_auto_by_default_and_a_value_is_passed_to_the_core(viewer_widget):
    _viewer, widget = viewer_widget
    assert widget.diameter_field.setting() == "auto"
    assert widget.diameter_field.spin.text() == "auto"
    widget.diameter_field.spin.setValue(31.5)
    assert widget._inference_options().diameter == 31.5


def test_measure_reads_the_objects_of_the_selected_labels_layer(viewer_widget, messages, nuclei_crop):
    viewer, widget = viewer_widget
    _image, labels = nuclei_crop
    layer = viewer.add_labels(labels, name="my nuclei")
    viewer.layers.selection.active = layer
    measured = widget.diameter_field.measure()
    assert measured == pytest.approx(median_diameter(labels))
    assert widget.diameter_field.spin.value() == pytest.approx(measured, abs=0.05)
    assert "my nuclei" in messages["info"][0] and not messages["error"]


def test_measure_reads_lines_drawn_across_objects(viewer_widget, messages):
    viewer, widget = viewer_widget
    lines = [np.array([[10, 10], [10, 40]]), np.array([[50, 5], [80, 45]]), np.array([[0, 0], [24, 0]])]
    layer = viewer.add_shapes(lines, shape_type="line", name="across cells")
    viewer.layers.selection.active = layer
    assert widget.diameter_field.measure() == pytest.approx(30.0)  # lengths 30, 50, 24


def test_measure_says_what_to_select_when_there_is_nothing_to_measure(viewer_widget, messages):
    viewer, widget = viewer_widget
    viewer.layers.selection.active = viewer.add_labels(np.zeros((20, 20), np.uint16), name="empty")
    assert widget.diameter_field.measure() is None
    viewer.layers.selection.active = viewer.add_image(np.zeros((20, 20)), name="picture")
    assert widget.diameter_field.measure() is None
    assert "holds no objects" in messages["error"][0]
    assert "is a Image layer" in messages["error"][1] and "Shapes layer" in messages["error"][1]
    assert widget.diameter_field.setting() == "auto"  # unchanged


def test_a_run_shows_the_size_it_used_and_records_it_on_the_result(qtbot, viewer_widget, nuclei_crop):
    viewer, widget = viewer_widget
    image, _labels = nuclei_crop
    viewer.add_image(np.kron(image, np.ones((3, 3), image.dtype)), name="enlarged nuclei")  # a 3x objective
    widget.diameter_field.spin.setValue(60.0)
    assert widget.scale_label.isHidden()  # no empty line under Object size before the first run
    widget.segment_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert not widget.scale_label.isHidden()
    text = widget.scale_label.text()
    assert text.startswith("Last run: objects 60 px across (given)") and "resampled ×0.34" in text
    result = next(layer for layer in viewer.layers if layer.name == "enlarged nuclei [U-Net]")
    assert unwrap_proxy(result).metadata[RESULT_KEY]["object_diameter_px"] == 60.0
