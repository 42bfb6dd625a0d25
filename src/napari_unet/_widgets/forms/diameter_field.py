"""The Segment widget's object-size row: Auto or a diameter in pixels, and a Measure button."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QDoubleSpinBox, QHBoxLayout, QPushButton, QWidget

from napari_unet._widgets.forms.notify import show_error, show_info
from napari_unet._widgets.layers.object_diameter import MeasureError, diameter_from_layer, shown_stack_index
from napari_unet._widgets.layers.proxies import unwrap_proxy

#: Largest diameter the field takes, in pixels.
MAX_DIAMETER = 10000.0

DIAMETER_TIP = (
    "Size of the objects in the image, as their diameter in pixels. Auto: estimated from the image at "
    "each run. The image is resampled so its objects have the size the model was trained at, then the "
    "results are mapped back to the image."
)
MEASURE_TIP = (
    "Measure the diameter on the canvas: select a Labels layer with a few objects (the median of their "
    "sizes), or a Shapes layer with lines drawn across a few objects (the median line length)."
)


class DiameterField(QWidget):
    """A spin box (0 = Auto) and a *Measure* button that reads the selected layer of ``viewer``."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, MAX_DIAMETER)
        self.spin.setDecimals(1)
        self.spin.setSingleStep(1.0)
        self.spin.setSpecialValueText("auto")
        self.spin.setSuffix(" px")
        self.spin.setToolTip(DIAMETER_TIP)
        self.measure_button = QPushButton("Measure")
        self.measure_button.setToolTip(MEASURE_TIP)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.spin, stretch=1)
        row.addWidget(self.measure_button)
        self.measure_button.clicked.connect(self.measure)

    def setting(self) -> float | str:
        """``"auto"`` or the diameter in pixels, as the core's ``diameter=`` takes it."""
        value = self.spin.value()
        return "auto" if value <= 0 else float(value)

    def measure(self) -> float | None:
        """Set the field from the selected layer; returns the diameter (None: nothing measured, a message says why)."""
        layer = self.viewer.layers.selection.active
        layer = None if layer is None else unwrap_proxy(layer)
        if layer is None:
            show_error("Nothing to measure: select a Labels layer with objects, or a Shapes layer with lines.")
            return None
        try:
            plane = shown_stack_index(self.viewer, layer) if type(layer).__name__ == "Labels" else ()
            diameter, how = diameter_from_layer(layer, plane=plane)
        except MeasureError as exc:
            show_error(f"Cannot measure the object size: {exc}")
            return None
        self.spin.setValue(min(diameter, MAX_DIAMETER))
        show_info(f"Object diameter {diameter:.1f} px ({how}).")
        return diameter
