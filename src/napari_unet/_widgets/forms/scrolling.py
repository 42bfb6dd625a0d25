"""A scroll area for dock widgets that share napari's right-hand dock area.

napari stacks plugin docks on top of each other; on a 1280 x 800 screen
three of them get about 230 pixels each. A plain widget then squeezes its
rows over each other (word-wrapped labels overlap the fields below), so the
widgets put their content in a :class:`VerticalScrollArea` instead.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

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
        self._capped: QWidget | None = None  # the widget kept within the content's height
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
            if self._capped is not None:
                self._fit_height()
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def stay_within_content(self, widget: QWidget) -> None:
        """Keep ``widget`` (the dock's widget holding this area) no taller than the content; shorter still scrolls."""
        self._capped = widget
        self._fit_height()

    def _fit_height(self) -> None:
        height = self.widget().sizeHint().height()
        if self._capped is not None and height > 0:  # no hint before the content is laid out
            self._capped.setMaximumHeight(height + 2 * self.frameWidth())

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
        Whether the dock should take spare height. False for a form of fixed
        length (Segment, Export): sharing the dock area with Fine-tune, it
        took 626 of 946 pixels for 368 pixels of content (the rest blank)
        while Fine-tune's verdict and buttons scrolled in 320; now it takes
        360 and Fine-tune 586 (a 1600 x 1000 window, Segment opened first).

    Returns
    -------
    VerticalScrollArea
        The scroll area (e.g. to ``ensureWidgetVisible`` a button).
    """
    scroll = VerticalScrollArea(content, min_height=min_height)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    if not grows:
        scroll.stay_within_content(widget)
    return scroll
