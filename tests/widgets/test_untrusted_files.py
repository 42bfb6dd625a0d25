"""What a model file holds reaches the user safely: a crafted file is a message, its text is plain text."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtGui import QTextDocument  # noqa: E402

from napari_unet._widgets import finetune_widget as fw  # noqa: E402
from napari_unet._widgets import segment_widget as sw  # noqa: E402
from napari_unet._widgets.forms.plain_text import literal_tip  # noqa: E402
from napari_unet.core import ModelFileError, new_model, save_model  # noqa: E402

pytestmark = pytest.mark.gui

#: A model name that Qt would draw bold, with an image, if it took it for HTML.
HTML_NAME = '<b>x</b><img src="/tmp/napari-unet-probe.png">'
HTML_CLASS = "<i>inside</i>"


def shown(text: str) -> str:
    """The characters Qt shows for a tooltip ``text`` (it renders text that looks like HTML as HTML)."""
    if not Qt.mightBeRichText(text):
        return text
    document = QTextDocument()
    document.setHtml(text)
    return document.toPlainText().replace("\u2028", "\n")


def _edit_architecture(path, **changes):
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    doc = json.loads(header["__metadata__"]["napari_unet"])
    for key, value in changes.items():
        section, field = key.split("__")
        doc[section][field] = value
    header["__metadata__"]["napari_unet"] = json.dumps(doc)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    return path


@pytest.fixture
def segment(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    assert widget.load_model_file(tiny_model_file)
    return viewer, widget


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(sw, "show_error", messages.append)
    return messages


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"architecture__base_features": 100_000}, "base_features must be between 1 and 2048, got 100000"),
        ({"architecture__norm": "group", "architecture__base_features": 3, "architecture__depth": 3}, "norm 'group'"),
        ({"instance_rule__min_size": 1e400}, "min_size must be a whole number"),
        ({"architecture__depth": 8}, "do not match the described architecture"),
    ],
    ids=["huge-features", "group-norm-torch-refuses", "infinite-min-size", "weights-of-another-depth"],
)
def test_a_crafted_model_file_is_a_message_and_keeps_the_model(
    segment, errors, tiny_model, tmp_path, changes, expected
):
    _viewer, widget = segment
    model, text = widget.session.model, widget.model_combo.currentText()
    crafted = _edit_architecture(save_model(tiny_model, tmp_path / "crafted.unet.safetensors"), **changes)

    assert widget.load_model_file(crafted) is False

    assert len(errors) == 1 and expected in errors[0], errors
    assert errors[0].startswith("Could not load the model: ") and "copy or download it again" in errors[0]
    assert widget.session.model is model
    assert widget.model_combo.currentText() == text


def test_fine_tune_opens_with_a_message_when_the_shipped_model_cannot_be_loaded(make_napari_viewer, monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(fw, "show_error", messages.append)

    def damaged(name):
        raise ModelFileError(f"{name}.unet.safetensors is truncated; copy or download it again")

    monkeypatch.setattr(fw, "load_named_model", damaged)
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")

    assert widget.session.model is None
    assert len(messages) == 1 and "truncated; copy or download it again" in messages[0]
    assert "none" in widget.model_label.text() and not widget.finetune_button.isEnabled()


@pytest.fixture
def html_model_file(tmp_path):
    """A model whose name, a class name and file name look like HTML."""
    model = new_model(
        depth=2,
        base_features=4,
        padding="same",
        class_names=["background", HTML_CLASS, "boundary"],
        name=HTML_NAME,
        description=f"{HTML_NAME} for tests",
    )
    return save_model(model, tmp_path / "<i>file.unet.safetensors")  # no slash: it is a file name


def test_a_model_name_from_a_file_shows_literally_in_segment(segment, html_model_file):
    viewer, widget = segment
    viewer.add_image(np.zeros((32, 32), np.uint8), name="<u>layer</u>")
    assert widget.load_model_file(html_model_file)

    assert widget.model_combo.currentText() == f"{HTML_NAME} ({html_model_file.name})"
    assert shown(widget.model_combo.itemData(widget.model_combo.currentIndex(), Qt.ItemDataRole.ToolTipRole)) == str(
        html_model_file
    )
    assert widget.model_info.textFormat() == Qt.TextFormat.PlainText
    assert HTML_CLASS in widget.model_info.text()
    assert f"Segment '<u>layer</u>' with '{HTML_NAME}'." in shown(widget.segment_button.toolTip())
    assert widget.status_label.textFormat() == Qt.TextFormat.PlainText


def test_a_model_name_from_a_file_shows_literally_in_fine_tune(segment, html_model_file):
    viewer, segment_widget = segment
    assert segment_widget.load_model_file(html_model_file)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    assert isinstance(widget, fw.FineTuneWidget)

    assert widget.model_label.textFormat() == Qt.TextFormat.PlainText
    assert widget.model_label.text() == HTML_NAME
    assert shown(widget.model_label.toolTip()).startswith(f"{html_model_file}\n")
    assert f"2 = {HTML_CLASS}" in shown(widget.mode_combo.toolTip())
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("scribbles"))
    assert widget.mode_hint.textFormat() == Qt.TextFormat.PlainText
    assert f"2 = {HTML_CLASS}" in widget.mode_hint.text()
    for label in (widget.status_label, widget.metric_label, widget.warning_label):
        assert label.textFormat() == Qt.TextFormat.PlainText


def test_plain_tooltips_are_left_as_they_are(segment):
    _viewer, widget = segment
    tip = widget.segment_button.toolTip()
    assert not Qt.mightBeRichText(tip) and "image layer" in tip


@pytest.mark.parametrize("text", [HTML_NAME, f"U-Net: {HTML_NAME}", f"{HTML_NAME}\nsecond  line", "plain 'text'"])
def test_literal_tips_show_their_text_even_with_napari_s_suffix(qapp, text):
    # napari's activity dock shows a job's description in a label as DESCRIPTION + ": "
    assert shown(literal_tip(text)) == text
    assert shown(literal_tip(text) + ": ") == text + ": "


def test_notifications_show_names_that_look_like_html_literally(monkeypatch):
    from napari.utils import notifications

    from napari_unet._widgets.forms import notify

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    notify.show_error("Cannot load '<b>x</b><img src=/etc/passwd>': not a model file")
    notify.show_error("Cannot load 'cells.unet.safetensors': not a model file")
    assert "&lt;b&gt;x&lt;/b&gt;&lt;img src=/etc/passwd&gt;" in shown[0] and "<b>" not in shown[0]
    assert shown[1] == "Cannot load 'cells.unet.safetensors': not a model file"
