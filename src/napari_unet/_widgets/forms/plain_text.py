"""Text from files and layer names shown as it is, never as rich text (HTML).

Qt renders a label's or a tooltip's text as HTML when it looks like HTML
(:func:`Qt.mightBeRichText`): a model named ``<b>x</b><img src=...>`` in a
model file, or a layer named so, would be drawn bold, with an image fetched
from the path it names. Labels that can show such text are plain-text labels;
tooltips that can hold it go through :func:`literal_tip`.
"""

from __future__ import annotations

import html

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel


def plain_label(text: str = "") -> QLabel:
    """A label that shows its text literally, whatever it contains (a model's or a layer's name)."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setText(text)
    return label


def literal_tip(text: str) -> str:
    """A tooltip that Qt shows as ``text``, character for character.

    Text that Qt would take for HTML is escaped and wrapped in a span
    that keeps its line breaks and spaces; other text is returned unchanged.

    Examples
    --------
    >>> literal_tip("Segment 'cells'.")
    "Segment 'cells'."
    >>> literal_tip("<b>x</b>")
    '<span style="white-space: pre-wrap">&lt;b&gt;x&lt;/b&gt;</span>'
    """
    if not Qt.mightBeRichText(text):
        return text
    return f'<span style="white-space: pre-wrap">{html.escape(text, quote=False)}</span>'
