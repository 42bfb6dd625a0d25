"""A small live plot of the training loss and the validation metric.

Drawn with ``QPainter`` so that napari-unet needs no plotting library: two
polylines over the training steps, the loss scaled to its own range (left
axis) and the metric on a fixed 0 to 1 scale (right axis). The loss of single
steps jumps with the patches drawn, so it is drawn faint, with its smoothed
course (an exponential moving average, :func:`smoothed`) on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

#: Colours of the two curves (readable on napari's dark and light themes).
LOSS_COLOR = QColor(255, 160, 60)
METRIC_COLOR = QColor(80, 200, 255)
#: Opacity (0-255) of the raw loss drawn behind its smoothed curve.
RAW_ALPHA = 70
#: Weight of the past in the smoothed loss (as TensorBoard's smoothing slider).
SMOOTHING = 0.8


def smoothed(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average of ``values``, debiased so that it starts at the first value.

    Parameters
    ----------
    values : sequence of float
        The raw values, in order.
    weight : float
        0 returns the values unchanged; closer to 1 smooths more.

    Examples
    --------
    >>> [round(v, 3) for v in smoothed([1.0, 0.0, 1.0, 0.0], weight=0.5)]
    [1.0, 0.333, 0.714, 0.333]
    """
    out: list[float] = []
    average = 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i) if weight < 1 else value)
    return out


class CurvePlot(QWidget):
    """Loss and validation metric against training steps.

    Attributes
    ----------
    points : list of tuple
        ``(step, loss, metric)`` in the order added; ``loss`` or ``metric``
        is None where that step has none (the metric is only measured every
        few steps, the baseline before any loss).
    metric_name : str
        Shown in the legend, e.g. ``"F1@0.5"``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[int, float | None, float | None]] = []
        self.metric_name = "metric"
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Training loss (orange, left scale; faint: every step, bold: smoothed) and the metric on the held-back annotation "
            "(blue, 0 to 1, right scale) against training steps. The loss should go down "
            "and the metric up; the dashed line is the metric before training."
        )

    def add_point(self, step: int, loss: float | None = None, metric: float | None = None) -> None:
        """Add the values of one step and redraw."""
        self.points.append((int(step), _finite(loss), _finite(metric)))
        self.update()

    def clear(self, metric_name: str = "metric") -> None:
        """Forget all points (a new training run starts)."""
        self.points = []
        self.metric_name = metric_name or "metric"
        self.update()

    # ------------------------------------------------------------------ drawing
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_color = self.palette().color(self.foregroundRole())
        metrics = self.fontMetrics()
        line = metrics.height()
        left = metrics.horizontalAdvance("0.000") + 6
        right = metrics.horizontalAdvance("1.0") + 6
        area = QRectF(left, line + 4, max(1, self.width() - left - right), max(1, self.height() - 2 * line - 8))
        grid = QColor(text_color)
        grid.setAlpha(70)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(area)

        losses = [(s, v) for s, v, _ in self.points if v is not None]
        scores = [(s, m) for s, _, m in self.points if m is not None]
        painter.setPen(text_color)
        if not self.points:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "Loss and metric appear here while training.")
            painter.end()
            return
        steps = [s for s, _, _ in self.points]
        first, last = min(steps), max(max(steps), min(steps) + 1)
        top = max((v for _, v in losses), default=1.0) or 1.0

        def x_of(step: float) -> float:
            return area.left() + (step - first) / (last - first) * area.width()

        def y_of(value: float, scale: float) -> float:
            return area.bottom() - min(max(value / scale, 0.0), 1.0) * area.height()

        # axes labels: loss range on the left, metric 0..1 on the right, steps below
        painter.setPen(LOSS_COLOR)
        painter.drawText(QRectF(0, area.top() - 2, left - 4, line), Qt.AlignmentFlag.AlignRight, f"{top:.3g}")
        painter.drawText(QRectF(0, area.bottom() - line + 2, left - 4, line), Qt.AlignmentFlag.AlignRight, "0")
        painter.setPen(METRIC_COLOR)
        painter.drawText(QRectF(area.right() + 4, area.top() - 2, right, line), Qt.AlignmentFlag.AlignLeft, "1")
        painter.drawText(
            QRectF(area.right() + 4, area.bottom() - line + 2, right, line), Qt.AlignmentFlag.AlignLeft, "0"
        )
        painter.setPen(text_color)
        below = QRectF(area.left(), area.bottom() + 2, area.width(), line)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, f"step {first}")
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, f"{last}")
        legend = QRectF(area.left(), 0, area.width(), line + 2)
        painter.setPen(LOSS_COLOR)
        painter.drawText(legend, Qt.AlignmentFlag.AlignLeft, "— loss")
        painter.setPen(METRIC_COLOR)
        painter.drawText(legend, Qt.AlignmentFlag.AlignRight, f"— {self.metric_name}")

        if scores and self.points[0][2] is not None and self.points[0][1] is None:
            # the baseline (metric before training) as a dashed line across the plot
            baseline = y_of(self.points[0][2], 1.0)
            pen = QPen(METRIC_COLOR, 1, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawLine(QPointF(area.left(), baseline), QPointF(area.right(), baseline))
        faint = QColor(LOSS_COLOR)
        faint.setAlpha(RAW_ALPHA)
        smooth = list(zip([s for s, _ in losses], smoothed([v for _, v in losses])))
        curves = ((losses, top, faint, 1), (smooth, top, LOSS_COLOR, 2), (scores, 1.0, METRIC_COLOR, 2))
        for values, scale, color, width in curves:
            if not values:
                continue
            painter.setPen(QPen(color, width))
            polygon = QPolygonF([QPointF(x_of(s), y_of(v, scale)) for s, v in values])
            if len(values) == 1:
                painter.drawEllipse(polygon[0], 2.5, 2.5)
            else:
                painter.drawPolyline(polygon)
        painter.end()


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or None for missing, NaN and infinite values (they are not drawn)."""
    return None if value is None or not math.isfinite(value) else float(value)
