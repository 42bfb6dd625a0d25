"""Choosers that list names the user gave: layers, model files, Shapes layers.

A plain QComboBox sizes itself to its longest item when it is first shown.
A model file or a layer with a long name, chosen before the dock was first
drawn, then made the whole form that wide: in a 1500-pixel-wide napari window
the Segment dock ran past the window's right edge, cutting off the Remove and
Cancel buttons and the end of every wrapped line. A name chooser asks for
room for a few characters (or for the names it always lists, such as the
shipped models) and cuts a longer name short; the drop-down list widens to
show each name in full.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from qtpy.QtWidgets import QComboBox

#: Characters a name chooser asks room for, whatever the names it lists.
NAME_CHARACTERS = 8


def fit_names(combo: QComboBox, /, *, fits: Iterable[str] = (), characters: int = NAME_CHARACTERS) -> QComboBox:
    """Make ``combo`` ask for room for ``characters`` characters and the names ``fits``, not its longest item.

    Parameters
    ----------
    combo : QComboBox
        A chooser whose items are names the user gave.
    fits : iterable of str
        Names it lists always, shown in full (in the chooser's font).
    characters : int
        The least width it asks for, in characters.

    Returns
    -------
    QComboBox
        ``combo`` itself.
    """
    metrics = combo.fontMetrics()
    widest = max((metrics.horizontalAdvance(name) for name in fits), default=0)
    # Qt counts the contents length in widths of "X"
    characters = max(characters, math.ceil(widest / max(metrics.horizontalAdvance("X"), 1)))
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    return combo
