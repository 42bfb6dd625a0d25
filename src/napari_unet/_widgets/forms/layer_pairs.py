"""Choosing (image layer, labels layer) pairs: what Fine-tune trains on.

One row per pair, each with an image chooser, a labels chooser and a remove
button; "Add another image" adds a row. Choosing an image picks its labels
layer: the Segment result of that image if there is one, otherwise the
top-most labels layer of the same shape.

Pairs follow the user: the layer selected in the viewer is the first guess
(a selected Labels layer brings the image it was segmented from), and until
the user picks in a chooser the one row follows the selection. Hidden image
layers are listed but never chosen without the user picking them.

Only call this from the GUI thread (it reads layers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari.layers
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet._widgets.forms.name_combo import fit_names
from napari_unet._widgets.layers.edits import has_edits
from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet._widgets.layers.session import ModelSession


def image_shape(layer: Any) -> tuple[int, ...]:
    """Shape of a labels layer that fits image ``layer``: its data without the RGB axis."""
    data = layer.data[0] if layer.multiscale else layer.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if layer.rgb else shape


class PairRow(QWidget):
    """One image layer and the labels layer painted for it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.image_combo = QComboBox()
        self.image_combo.setPlaceholderText("no image layer")
        self.image_combo.setToolTip("An image layer to train on.")
        self.labels_combo = QComboBox()
        self.labels_combo.setPlaceholderText("choose labels")
        self.labels_combo.setToolTip(
            "The labels layer painted for this image: the corrected Segment result, or your "
            "scribbles. It must have the image's shape (without colour channels)."
        )
        self.remove_button = QPushButton("✕")
        self.remove_button.setFixedWidth(self.remove_button.fontMetrics().horizontalAdvance("✕") + 16)
        self.remove_button.setToolTip("Do not train on this image.")
        for combo in (self.image_combo, self.labels_combo):
            fit_names(combo)

    @property
    def image(self) -> Any:
        """The chosen image layer, or None."""
        return self.image_combo.currentData()

    @property
    def labels(self) -> Any:
        """The chosen labels layer, or None."""
        return self.labels_combo.currentData()


class LayerPairs(QWidget):
    """Rows of (image, labels) layer pairs.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the layers are.
    session : ModelSession
        For the Segment result of each image (the natural labels to correct).
    hidden : callable, optional
        Labels layers for which it returns True are not offered (previews).

    Attributes
    ----------
    rows : list of PairRow
    changed : Signal
        Emitted when a choice changes or a row is added or removed.
    """

    changed = Signal()

    def __init__(
        self,
        viewer: Any,
        session: ModelSession,
        hidden: Callable[[Any], bool] = lambda layer: False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.hidden = hidden
        self.rows: list[PairRow] = []
        self.user_chose = False  # True once the user picked in a chooser: the selection is no longer followed
        self._grid = QGridLayout()
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setColumnStretch(0, 1)
        self._grid.setColumnStretch(1, 1)
        self._grid.addWidget(QLabel("Image"), 0, 0)
        self._grid.addWidget(QLabel("Labels"), 0, 1)
        self.add_button = QPushButton("+ Add another image")
        self.add_button.setToolTip("Train on several images at once, each with its own labels layer.")
        self.add_button.clicked.connect(lambda: self.add_pair())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._grid)
        layout.addWidget(self.add_button, alignment=Qt.AlignmentFlag.AlignLeft)
        self.add_pair()

    # ------------------------------------------------------------------- rows
    def add_pair(self, image: Any = None, labels: Any = None) -> PairRow:
        """Add a row; by default with an image layer no other row uses."""
        row = PairRow(self)
        self.rows.append(row)
        self._place_rows()
        row.image_combo.currentIndexChanged.connect(lambda _: self._on_image_chosen(row))
        row.labels_combo.currentIndexChanged.connect(lambda _: self.changed.emit())
        row.remove_button.clicked.connect(lambda: self.remove_pair(row))
        row.image_combo.activated.connect(self._on_user_choice)
        row.labels_combo.activated.connect(self._on_user_choice)
        self._fill(row)
        if image is None:
            image, guessed = self._guess(row)
            labels = labels if labels is not None else guessed
        if image is not None:
            _select(row.image_combo, image)
        if labels is not None:
            _select(row.labels_combo, labels)
        elif row.labels is None:
            self._pick_labels(row)
        self._update_remove_buttons()
        self.changed.emit()
        return row

    def _guess(self, row: PairRow) -> tuple[Any, Any]:
        """(image, labels or None) for a new row: from the selection, else the top-most visible free image."""
        used = {id(unwrap_proxy(r.image)) for r in self.rows if r is not row and r.image is not None}
        selected = self.from_selection()
        if selected[0] is not None and id(unwrap_proxy(selected[0])) not in used:
            return selected
        free = [layer for layer in self._images() if id(unwrap_proxy(layer)) not in used and layer.visible]
        return (free[-1] if free else None), None

    def from_selection(self) -> tuple[Any, Any]:
        """(image, labels) the viewer's selected layer stands for; (None, None) if it says nothing.

        A selected image layer is the image. A selected Labels layer is the
        labels, with the image Segment made it from (or, for a layer made by
        hand, the only visible image of its shape).
        """
        active = self.viewer.layers.selection.active
        if isinstance(active, napari.layers.Image) and not self.hidden(active):
            return active, None
        if not isinstance(active, napari.layers.Labels) or self.hidden(active):
            return None, None
        source = self.session.results.origin_of(self.viewer, active)
        if source is None:
            shape = tuple(active.data.shape)
            fits = [layer for layer in self._images() if layer.visible and image_shape(layer) == shape]
            source = fits[0] if len(fits) == 1 else None
        return (source, active) if source is not None else (None, None)

    def follow_selection(self, *_: Any) -> None:
        """Pair the selected layer in the one row, unless the user has chosen in the choosers."""
        if self.user_chose or len(self.rows) != 1:
            return
        row = self.rows[0]
        image, labels = self.from_selection()
        active = self.viewer.layers.selection.active
        if image is None and isinstance(active, napari.layers.Labels) and not self.hidden(active):
            # a labels layer made by hand, of the shape of the row's image: it is for that image
            if row.image is not None and tuple(active.data.shape) == image_shape(row.image):
                image, labels = row.image, active
        if image is None:
            return
        same_image = unwrap_proxy(row.image) is unwrap_proxy(image)
        if same_image and (labels is None or unwrap_proxy(row.labels) is unwrap_proxy(labels)):
            return
        if same_image and labels is not None and row.labels is not None and self._keeps_corrections(row, labels):
            return  # e.g. Segment again added (and napari selected) a fresh result beside the corrected one
        row.image_combo.blockSignals(True)
        _select(row.image_combo, image)
        row.image_combo.blockSignals(False)
        if labels is not None:
            _select(row.labels_combo, labels)
        elif not same_image:
            self._pick_labels(row)
        self.changed.emit()

    def _keeps_corrections(self, row: PairRow, selected: Any) -> bool:
        """True if the row's labels are corrections of its image and ``selected`` is an unedited result."""
        current = row.labels
        fits = tuple(current.data.shape) == image_shape(row.image)
        return fits and has_edits(current) and not has_edits(selected)

    def _on_user_choice(self, *_: Any) -> None:
        self.user_chose = True

    def remove_pair(self, row: PairRow) -> None:
        """Remove a row (the last row stays)."""
        if len(self.rows) <= 1 or row not in self.rows:
            return
        self.rows.remove(row)
        for widget in (row.image_combo, row.labels_combo, row.remove_button):
            self._grid.removeWidget(widget)
        row.deleteLater()
        self._place_rows()
        self._update_remove_buttons()
        self.changed.emit()

    def pairs(self) -> list[tuple[Any, Any]]:
        """(image layer or None, labels layer or None) of every row."""
        return [(row.image, row.labels) for row in self.rows]

    def _place_rows(self) -> None:
        for i, row in enumerate(self.rows, start=1):
            self._grid.addWidget(row.image_combo, i, 0)
            self._grid.addWidget(row.labels_combo, i, 1)
            self._grid.addWidget(row.remove_button, i, 2)

    def _update_remove_buttons(self) -> None:
        for row in self.rows:
            row.remove_button.setEnabled(len(self.rows) > 1)

    # ----------------------------------------------------------------- layers
    def _images(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _labels(self) -> list[Any]:
        return [
            layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels) and not self.hidden(layer)
        ]

    def refresh(self, *_: Any) -> None:
        """List the viewer's layers again, keeping every row's choices that still exist."""
        for row in self.rows:
            before = unwrap_proxy(row.image)
            self._fill(row)
            if row.labels is None or unwrap_proxy(row.image) is not before:
                self._pick_labels(row)
        self.changed.emit()

    def _fill(self, row: PairRow) -> None:
        for combo, layers in ((row.image_combo, self._images()), (row.labels_combo, self._labels())):
            chosen = unwrap_proxy(combo.currentData()) if combo.currentIndex() >= 0 else None
            combo.blockSignals(True)
            combo.clear()
            for layer in layers:
                combo.addItem(layer.name, layer)
                combo.setItemData(combo.count() - 1, _describe(layer), Qt.ItemDataRole.ToolTipRole)
                if unwrap_proxy(layer) is chosen:
                    combo.setCurrentIndex(combo.count() - 1)
            visible = [i for i, layer in enumerate(layers) if layer.visible]
            if combo.currentIndex() < 0 and combo is row.image_combo and visible:
                combo.setCurrentIndex(visible[-1])  # a hidden image is never chosen silently
            combo.blockSignals(False)

    def _on_image_chosen(self, row: PairRow) -> None:
        self._pick_labels(row)
        self.changed.emit()

    def _pick_labels(self, row: PairRow) -> None:
        """Choose the labels layer that belongs to the row's image, if one is obvious."""
        image = row.image
        if image is None:
            return
        candidates = self._labels()
        ids = {id(unwrap_proxy(layer)) for layer in candidates}
        result = [
            layer for layer in self.session.results.find(self.viewer, image, "labels") if id(unwrap_proxy(layer)) in ids
        ]
        shape = image_shape(image)
        same_shape = [layer for layer in candidates if tuple(layer.data.shape) == shape]
        best = (result or same_shape[::-1] or [None])[0]
        if best is not None:
            _select(row.labels_combo, best)
        elif row.labels is not None and tuple(row.labels.data.shape) != shape:
            row.labels_combo.setCurrentIndex(-1)  # labels of another image: never trained on with this one


def _select(combo: QComboBox, layer: Any) -> None:
    for i in range(combo.count()):
        if unwrap_proxy(combo.itemData(i)) is unwrap_proxy(layer):
            combo.setCurrentIndex(i)
            return
    raise ValueError(f"{layer!r} cannot be chosen here")


def _describe(layer: Any) -> str:
    data = layer.data[0] if layer.multiscale else layer.data
    kind = "RGB image" if getattr(layer, "rgb", False) else type(layer).__name__.lower()
    return f"{kind}, shape {tuple(int(s) for s in data.shape)}, {layer.dtype}"
