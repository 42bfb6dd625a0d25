"""A scroll area for dock widgets that share napari's right-hand dock area.

napari stacks plugin docks on top of each other; on a 1280 x 800 screen
three of them get about 230 pixels each. A plain widget then squeezes its
rows over each other (word-wrapped labels overlap the fields below), so the
widgets put their content in a :class:`VerticalScrollArea` instead.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtGui import QShowEvent
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget

#: The most height a dock asks for as its minimum by default; beyond it the content scrolls.
#: Segment and Export (180) and Fine-tune (300) fit together in an 800-pixel-high window.
MIN_HEIGHT = 180


class VerticalScrollArea(QScrollArea):
    """Scrolls ``content`` vertically when the dock is short; asks for its full size otherwise.

    A plain QScrollArea asks for little room, so napari would give a shared
    dock almost nothing, and it would cut the content off on the right.

    Parameters
    ----------
    content : QWidget
        What to show.
    min_height : int
        The most height the area asks for as its minimum (less if the
        content needs less); below its full height the content scrolls.
    """

    def __init__(self, content: QWidget, *, min_height: int = MIN_HEIGHT) -> None:
        super().__init__()
        self.min_height = min_height
        self.fixed_length = False  # set by scrolling_content(grows=False)
        self._balanced = False
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Ask the dock for room again when the content's layout changes (a longer name, a shown row).

        The hints below follow the content, but Qt does not ask a scroll area
        for them again when only its content changed: the dock kept its first
        width and cut off what had grown since.
        """
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        """The first time the dock shows, share the dock area's height (:func:`balance_dock_heights`)."""
        super().showEvent(event)
        if not self._balanced:
            self._balanced = True
            QTimer.singleShot(0, self._balance)

    def _balance(self) -> None:
        try:
            balance_dock_heights(self)
        except RuntimeError:  # the dock was closed before the timer fired: its Qt objects are gone
            pass

    def _frame(self) -> int:
        """Width the area adds around its content: the scroll bar and the frame (napari's style draws one)."""
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self._frame(), hint.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        least = self.widget().minimumSizeHint()
        return QSize(least.width() + self._frame(), min(least.height(), self.min_height))


def scrolling_content(
    widget: QWidget, content: QWidget, *, min_height: int = MIN_HEIGHT, grows: bool = True
) -> VerticalScrollArea:
    """Fill ``widget`` with a :class:`VerticalScrollArea` showing ``content``.

    Parameters
    ----------
    widget : QWidget
        The dock widget; it gets a layout holding only the scroll area.
    content : QWidget
        What the dock shows; give it its own layout.
    min_height : int
        See :class:`VerticalScrollArea`.
    grows : bool
        Whether the dock can use spare height. False for a form of fixed
        length (Segment, Export): beside a dock that grows, it is given its
        full height once, and the rest goes to the other
        (:func:`balance_dock_heights`).

    Returns
    -------
    VerticalScrollArea
        The scroll area (e.g. to ``ensureWidgetVisible`` a button).
    """
    scroll = VerticalScrollArea(content, min_height=min_height)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    scroll.fixed_length = not grows
    return scroll


def balance_dock_heights(area: VerticalScrollArea) -> None:
    """Give the fixed-length forms docked beside ``area`` their full height, and the growing docks the rest.

    Qt gives a dock added to a dock area its minimum height and leaves the
    others as they were: Segment opened first and Fine-tune next, Segment kept
    626 of 946 pixels for 368 pixels of form (the rest blank) while Fine-tune's
    pairs, verdict and buttons scrolled in its 300-pixel minimum. This resizes
    the docks once, as a user would drag the splitter; afterwards the user's
    own sizes are kept. Nothing is done unless a growing dock (Fine-tune) and
    a fixed-length one (Segment, Export) share the area, so Segment and
    Export alone split it as Qt does.
    """
    dock = area.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window = dock.parentWidget() if dock is not None else None
    if dock is None or not isinstance(window, QMainWindow) or dock.isFloating():
        return
    side = window.dockWidgetArea(dock)
    shared = [
        (d, d.findChild(VerticalScrollArea))
        for d in window.findChildren(QDockWidget)
        if d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == side
    ]
    forms = sorted(((d, s) for d, s in shared if s is not None and s.fixed_length), key=lambda f: f[0].y())
    others = [d for d, s in shared if s is None or not s.fixed_length]
    if not forms or not any(s is not None and not s.fixed_length for _d, s in shared):
        return
    # the forms from the top down get their full height (the dock's title and margins, plus the form),
    # as long as the other docks keep their minimum; those get the rest
    left = sum(d.height() for d, _s in shared) - sum(d.minimumSizeHint().height() for d in others)
    heights = []
    for d, s in forms:
        full = d.height() - s.height() + s.widget().sizeHint().height() + 2 * s.frameWidth()
        heights.append(max(min(full, left), d.minimumSizeHint().height()))
        left -= heights[-1]
    rest = sum(d.height() for d, _s in shared) - sum(heights)
    # Qt spreads what the sizes do not account for over the docks named, so every dock is named
    window.resizeDocks(
        [d for d, _s in forms] + others, heights + [max(rest // len(others), 1)] * len(others), Qt.Orientation.Vertical
    )
