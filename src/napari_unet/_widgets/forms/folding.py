"""Folded sections ("Advanced options") that explain themselves when hovered."""

from __future__ import annotations

from qtpy.QtWidgets import QPushButton
from superqt import QCollapsible


def set_fold_tip(section: QCollapsible, text: str) -> None:
    """Give ``section`` and the button that folds and unfolds it the tooltip ``text``.

    The button is superqt's own child widget; a tooltip on the section alone
    is not shown while the pointer is over its title.
    """
    section.setToolTip(text)
    for button in section.findChildren(QPushButton):
        if not button.toolTip():
            button.setToolTip(f"{text} Click to show or hide.")
