"""The Fine-tune widget's *Export bioimage.io...* button, in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._widgets.forms import bioimageio_button as bb  # noqa: E402
from napari_unet._widgets.layers.session import session_for  # noqa: E402
from napari_unet.core import load_model  # noqa: E402
from napari_unet.core.errors import UserError  # noqa: E402
from napari_unet.core.network import bioimageio_requirements as req  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 60_000


def _unusable() -> str:
    try:
        req.bioimageio_spec()
    except UserError as exc:
        return str(exc)
    return ""


@pytest.fixture
def widget(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    session_for(viewer).set_model(load_model(tiny_model_file), str(tiny_model_file))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    return widget


@pytest.mark.skipif(bool(_unusable()), reason=f"bioimage.io libraries unusable: {_unusable()}")
def test_exports_the_model_in_use_before_fine_tuning(qtbot, widget, tmp_path):
    button = widget.bioimageio_button
    assert button.isEnabled(), button.toolTip()
    assert widget.save_button.isEnabled() is False  # Save model waits for a result; the export does not
    assert button.export_to(tmp_path / "tiny") is not None
    assert not button.isEnabled()  # one job at a time
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert "Exported to" in widget.status_label.text(), widget.status_label.text()
    assert load_model(tmp_path / "tiny.zip").description.to_dict() == widget.session.model.description.to_dict()
    assert button.isEnabled()


def test_a_failed_export_is_a_message_and_keeps_the_model(qtbot, widget, tmp_path, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(bb, "show_error", shown.append)
    model = widget.session.model
    # without usable bioimage.io libraries this fails for that reason, with them for the missing folder
    button = widget.bioimageio_button
    button.export_to(tmp_path / "no such folder" / "tiny.zip")
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert shown and shown[0].startswith("Could not export the model"), shown
    assert "Export failed" in widget.status_label.text()
    assert widget.session.model is model
    assert not (tmp_path / "no such folder").exists()
