"""Text from files and layer names shown as it is, never as rich text (HTML).

Qt renders a label's or a tooltip's text as HTML when it looks like HTML
(:func:`Qt.mightBeRichText`): a model named ``<b>x</b><img src=...>`` in a
model file, or a layer named so, would be drawn bold, with an image fetched
from the path it names. Labels that can show such text are plain-text labels;
tooltips that can hold it go through :func:`literal_tip`.

Such text can also hold words far longer than a dock is wide (a layer named
``time_lapse_of_mesenchymal_stem_cells_...``, a folder path). A word-wrapped
label breaks lines only between words, so one such word made the label, and
the whole dock, that wide. Plain-text labels may break a long word too:
after separators such as ``_``, ``/`` or ``.``, and within runs of
:data:`BREAK_EVERY` characters (:func:`breakable`).
"""

from __future__ import annotations

import html
import re

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel

#: A word longer than this may be broken within a run of this many characters without a separator.
BREAK_EVERY = 16
#: Where a line may break inside a long word: a zero-width space, which Qt's line breaking honours.
_BREAK = "\u200b"
_LONG_WORD = re.compile(rf"\S{{{BREAK_EVERY + 1},}}")
_SEPARATOR = re.compile(r"([_/\\.\-:,;=+)\]}])(?=.)")
# not before a combining mark (an accent of the letter before it) or inside an emoji joined by U+200D
_RUN = re.compile(rf"[^{_BREAK}]{{{BREAK_EVERY}}}(?<!\u200d)(?=[^{_BREAK}\u0300-\u036f\u200d])")


def breakable(text: str) -> str:
    r"""``text`` with line-break chances (zero-width spaces) inside its words longer than :data:`BREAK_EVERY`.

    Examples
    --------
    >>> breakable("Trains on 'mesenchymal_cells_t034'.").split("\u200b")
    ["Trains on 'mesenchymal_", 'cells_', "t034'."]
    >>> breakable("x" * 40).count("\u200b")
    2
    >>> breakable("short words stay as they are")
    'short words stay as they are'
    """

    def split(word: re.Match[str]) -> str:
        marked = _SEPARATOR.sub(lambda m: m.group(1) + _BREAK, word.group(0))
        return _RUN.sub(lambda m: m.group(0) + _BREAK, marked)

    return _LONG_WORD.sub(split, text)


class PlainLabel(QLabel):
    """A label that shows its text literally and may break its long words; :meth:`text` returns what was set."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setTextFormat(Qt.TextFormat.PlainText)
        self._text = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        """Show ``text`` (line breaks allowed inside its long words)."""
        self._text = text
        super().setText(breakable(text))

    def text(self) -> str:
        """The text as it was set, without the line-break chances."""
        return self._text


def plain_label(text: str = "") -> QLabel:
    """A label that shows its text literally, whatever it contains (a model's or a layer's name)."""
    return PlainLabel(text)


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
