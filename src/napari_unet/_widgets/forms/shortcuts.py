"""Keyboard shortcuts that press a widget's buttons while the widget is docked.

A :class:`~qtpy.QtWidgets.QShortcut` with the window context is active only
while its parent widget is visible in the active window: so the shortcuts of
a docked widget work wherever the focus is in napari's window (the canvas,
the layer list), and stop when the dock is closed. Pressing the keys clicks
the button, which does nothing while the button is disabled, so a shortcut
never does what its button would refuse.

The keys avoid napari's own Ctrl+Shift shortcuts (C, O, P, T, Z) and are
shown in the buttons' tooltips (see :func:`set_tip`).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QAbstractButton, QShortcut, QWidget

from napari_unet._widgets.forms.plain_text import literal_tip

#: Shortcuts of the napari-unet widgets (portable text; Ctrl is Cmd on macOS).
SEGMENT = "Ctrl+Shift+G"
CANCEL_SEGMENT = "Ctrl+Shift+X"
FINE_TUNE = "Ctrl+Shift+F"
STOP_TRAINING = "Ctrl+Shift+K"

_PROPERTY = "napari_unet_shortcut"


def add_shortcut(widget: QWidget, button: QAbstractButton, keys: str) -> QShortcut:
    """Click ``button`` when ``keys`` are pressed while ``widget`` is shown in the active window.

    Parameters
    ----------
    widget : QWidget
        The dock widget; the shortcut lives and dies with it.
    button : QAbstractButton
        The button the keys press; its tooltip gets the keys appended.
    keys : str
        Portable key sequence text, e.g. ``"Ctrl+Shift+G"``.

    Returns
    -------
    QShortcut
    """
    shortcut = QShortcut(QKeySequence(keys), widget)
    shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
    shortcut.activated.connect(button.click)
    button.setProperty(_PROPERTY, keys)
    set_tip(button, button.toolTip())
    return shortcut


def shortcut_text(button: QAbstractButton) -> str:
    """The keys of ``button``'s shortcut as the user's platform writes them, or ``""``."""
    keys = button.property(_PROPERTY)
    if not keys:
        return ""
    return QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)


def set_tip(button: QAbstractButton, text: str) -> None:
    """Set ``button``'s tooltip to ``text`` followed by its shortcut, e.g. ``"Segment ... (Ctrl+Shift+G)"``.

    The text may hold layer and model names: it is shown literally (:func:`.plain_text.literal_tip`).
    """
    keys = shortcut_text(button)
    suffix = f" ({keys})" if keys else ""
    if keys and text.endswith(suffix):
        text = text[: -len(suffix)]
    button.setToolTip(literal_tip(f"{text}{suffix}"))
