"""The Fine-tune widget: teach the viewer's model from corrected or painted labels.

The widget is thin: on the GUI thread it copies the painted labels and reads
the settings; :func:`napari_unet.core.training.finetune_job.finetune_job` builds the training samples
and trains a copy of the model in a worker thread (the widget's
:class:`~napari_unet._widgets.forms.job_runner.JobRunner`); the result is
offered for Accept or Discard and never replaces the model by itself.
The model is the one of the viewer's :class:`.session.ModelSession`, shared
with the Segment widget.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import napari.layers
import numpy as np
from napari.qt.threading import GeneratorWorker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets.forms import shortcuts
from napari_unet._widgets.forms.bioimageio_button import BioimageioButton
from napari_unet._widgets.forms.curve_plot import CurvePlot
from napari_unet._widgets.forms.job_runner import JobHandlers, JobRunner, RunsJobs
from napari_unet._widgets.forms.layer_pairs import LayerPairs, image_shape
from napari_unet._widgets.forms.lifetime import connect_for_life
from napari_unet._widgets.forms.name_combo import fit_names
from napari_unet._widgets.forms.notify import show_error, show_info, warn_install_conflict
from napari_unet._widgets.forms.plain_text import literal_tip, plain_label
from napari_unet._widgets.forms.scrolling import scrolling_content
from napari_unet._widgets.forms.training_options import TrainingOptions
from napari_unet._widgets.layers.edits import mark_edited
from napari_unet._widgets.layers.layer_events import follow_layers
from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet._widgets.layers.results import RESULT_KEY, Target, make_target, shown_plane
from napari_unet._widgets.layers.reviewed import reviewed_mask
from napari_unet._widgets.layers.session import session_for
from napari_unet._widgets.layers.warm_up import start_warm_up
from napari_unet.core import Progress, SegmentationModel, Stage, load_named_model, save_model, shipped_models
from napari_unet.core.errors import UserError
from napari_unet.core.inference.layout import ImageLayout, ImageLayoutError, infer_layout
from napari_unet.core.io.atomic import OutputError
from napari_unet.core.network.user_models import save_user_model
from napari_unet.core.training.annotations import AnnotationError
from napari_unet.core.training.finetune_job import (
    AnnotatedImage,
    FineTuneRequest,
    PreviewSource,
    PreviewUpdate,
    finetune_job,
    plane_preview,
)
from napari_unet.core.training.loop import TrainingResult, TrainingSettings
from napari_unet.core.training.training_set import load_training_set, save_training_set

log = logging.getLogger(__name__)

#: Seconds between two previews of the model being trained.
PREVIEW_SECONDS = 5.0
_MODES = (
    ("corrections", "Corrections of a Segment result"),
    ("scribbles", "Sparse scribbles"),
)
_FINE_TUNED = re.compile(r"( \(fine-tuned\))+$")


def preview_name(image_name: str) -> str:
    """Name of the preview Labels layer of image layer ``image_name``."""
    return f"{image_name} [U-Net preview]"


@dataclass
class _RunningJob:
    """A started job: its Stop flag and preview target.

    ``plane`` is written on the GUI thread (when the user moves through a
    stack) and read by the worker: one tuple assignment, no lock needed.
    """

    stop: threading.Event
    budget: float | None
    preview: Target | None = None
    plane: tuple[int, ...] = ()
    metric_name: str = ""
    last: dict[str, Any] = field(default_factory=dict)
    images: list[AnnotatedImage] = field(default_factory=list)  # the chosen layers' annotation (not earlier ones)
    mode: str = "corrections"


def _add_unselected(viewer: Any, layer: Any) -> None:
    """Add ``layer`` without selecting it: painting during training stays in the user's labels layer.

    napari selects every layer it adds; the layer controls panel then shows
    the new layer's controls for the first time, which costs about 0.2 s on
    the GUI thread. napari's layer list can insert without activating (its
    ``_activate_on_insert`` switch); where that switch is missing, the
    selection is given back after the insert instead.
    """
    layers = unwrap_proxy(viewer.layers)
    if isinstance(getattr(layers, "_activate_on_insert", None), bool):
        previous = layers._activate_on_insert
        layers._activate_on_insert = False
        try:
            viewer.add_layer(layer)
        finally:
            layers._activate_on_insert = previous
        return
    selection = viewer.layers.selection
    selected = [unwrap_proxy(chosen) for chosen in selection]
    viewer.add_layer(layer)
    selection.clear()
    selection.update(selected)


class FineTuneWidget(RunsJobs, QWidget):
    """Fine-tune the viewer's U-Net on painted labels, with a live curve and Accept/Discard.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it, possibly as a proxy).

    Attributes
    ----------
    worker : napari.qt.threading.GeneratorWorker or None
        The worker of the last job started (still set after it finished).
    result : TrainingResult or None
        The last training result; ``result.model`` is a new model, used only
        after :meth:`accept`.
    plot : CurvePlot
        Loss and validation metric of the running or last job.
    session : ModelSession
        The viewer's model session, shared with the Segment widget.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        start_warm_up()  # first-use imports off the GUI thread, before the first result arrives
        warn_install_conflict()  # another napari-unet distribution in this environment: say what to do
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.result: TrainingResult | None = None
        self._job: _RunningJob | None = None
        self._pending = False  # a result waits for Accept or Discard
        self._saveable = False
        self._previews: weakref.WeakSet[Any] = weakref.WeakSet()
        self._held_back_layers: list[Any] = []  # what the last run held back for validation
        self._build()
        self._runner = JobRunner(self, status=self.status_label)  # closing the dock or the viewer ends training
        follow_layers(self, self.viewer, self._on_layers_changed)
        connect_for_life(self, self.session.model_changed, self._on_model_changed)
        connect_for_life(self, self.viewer.layers.selection.events.active, self._on_selection_changed)
        connect_for_life(self, self.session.corrections.changed, self._refresh_training_set)
        self._refresh_training_set()
        if self.session.model is None and shipped_models():
            self._load_first_shipped_model()
        self._on_model_changed()

    def _load_first_shipped_model(self) -> None:
        """Start with the default shipped model; a damaged one is a message, and the widget still opens."""
        key = shipped_models()[0].key
        try:
            self.session.set_model(load_named_model(key), key)
        except UserError as exc:
            show_error(f"Could not load the model: {exc}")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.model_label = plain_label()  # the model's name, from its file
        self.model_label.setWordWrap(True)
        self.model_label.setToolTip(
            "The model being fine-tuned: the one the Segment widget uses. Choose another one there."
        )
        self.pairs = LayerPairs(self.viewer, self.session, hidden=self._is_preview)
        self.pair_label = plain_label()  # layer names
        self.pair_label.setWordWrap(True)
        self.pair_label.setToolTip("What the next Fine-tune trains on: the pairs above and the training set below.")
        self.set_label = plain_label("Training set")  # its count changes as the widget is used
        self.set_label.setWordWrap(True)
        self.set_list = QListWidget()
        self.set_list.setMaximumHeight(4 * self.fontMetrics().height() + 8)
        self.set_list.setToolTip(
            "Images corrected in this session (or loaded from a folder): every Fine-tune trains on them "
            "too, so earlier rounds' corrections are never lost. An image trained on again replaces its entry."
        )
        self.remove_set_button = QPushButton("Remove from set")
        self.remove_set_button.setToolTip("Do not train on the selected image of the training set any more.")
        self.save_set_button = QPushButton("Save set...")
        self.save_set_button.setToolTip(
            "Write the training set to a folder: images/NAME.tif and labels/NAME.tif "
            "(what 'napari-unet train FOLDER/images --labels FOLDER/labels' reads)."
        )
        self.load_set_button = QPushButton("Load set...")
        self.load_set_button.setToolTip(
            "Add the images and labels of a folder saved with 'Save set...' (images/ and labels/ with the same names)."
        )
        self.mode_combo = QComboBox()
        for value, text in _MODES:
            self.mode_combo.addItem(text, value)
        self.mode_hint = plain_label()  # class names, from the model file
        self.mode_hint.setWordWrap(True)
        self.mode_hint.setToolTip("How to paint the labels layer for the chosen annotation and model.")
        self.all_planes = QRadioButton("All annotated planes")
        self.all_planes.setToolTip("Train on every plane of the stack that has labels painted in it.")
        self.current_plane = QRadioButton("Current plane")
        self.current_plane.setToolTip("Train only on the plane shown in the viewer.")
        self.all_planes.setChecked(True)
        self.reviewed_combo = fit_names(QComboBox())
        self.reviewed_combo.setToolTip(
            "Corrections only. 'Whole planes': every pixel of the planes used is ground truth. Or choose a "
            "Shapes layer: only pixels inside its rectangles/polygons count as reviewed; the rest is ignored."
        )
        self._refresh_reviewed()
        self._planes_group = QButtonGroup(self)
        self._planes_group.addButton(self.all_planes)
        self._planes_group.addButton(self.current_plane)
        planes = QHBoxLayout()
        planes.setContentsMargins(0, 0, 0, 0)
        planes.addWidget(self.all_planes)
        planes.addWidget(self.current_plane)
        planes.addStretch()
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(0, 24 * 3600)
        self.budget_spin.setValue(60)
        self.budget_spin.setSingleStep(30)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setSpecialValueText("no limit (steps only)")
        self.budget_spin.setToolTip(
            "How long to train. Training stops at this time or after the maximum number of steps "
            "(Advanced options), whichever comes first; Stop ends it earlier."
        )

        self.options = TrainingOptions()

        self.keep_preview_check = QCheckBox("Keep the preview layer after training")
        self.keep_preview_check.setToolTip(
            "While training, the layer '<image> [U-Net preview]' shows what the model being trained predicts "
            "on the plane in view, every few seconds. Unchecked: it is hidden when training ends and removed "
            "when you Accept or Discard the result."
        )
        self.finetune_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End training after the current step and keep the best model so far.")
        run_buttons = QHBoxLayout()
        run_buttons.addWidget(self.finetune_button, stretch=2)
        run_buttons.addWidget(self.stop_button, stretch=1)
        self.status_label = plain_label()
        self.status_label.setWordWrap(True)
        self.status_label.setToolTip("What the training is doing, or did.")
        self.plot = CurvePlot()
        self.metric_label = plain_label()
        self.metric_label.setWordWrap(True)
        self.metric_label.setToolTip("The metric on the held-back annotation before training → of the result.")
        self.warning_label = plain_label()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #ffb347; font-weight: bold;")
        self.warning_label.setToolTip("Why the fine-tuned model may not be worth accepting.")
        self.warning_label.hide()
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Use the fine-tuned model in Segment; the model before stays available (Revert).")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Forget the fine-tuned model; the model in use does not change.")
        self.revert_button = QPushButton("Revert to previous model")
        self.save_button = QPushButton("Save model...")
        self.save_button.setToolTip("Write the fine-tuned model to a .unet.safetensors file (to reuse or share).")
        decide = QHBoxLayout()
        decide.addWidget(self.accept_button)
        decide.addWidget(self.discard_button)
        more = QHBoxLayout()
        more.addWidget(self.revert_button)
        more.addWidget(self.save_button)
        self.bioimageio_button = BioimageioButton(
            self, lambda: self._runner, self._model_to_export, self.status_label, self._update_state
        )
        more.addWidget(self.bioimageio_button)

        top = QFormLayout()
        top.addRow("Model", self.model_label)
        main = QFormLayout()
        main.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        main.addRow("Annotation", self.mode_combo)
        main.addRow("", self.mode_hint)
        main.addRow("Planes", planes)
        main.addRow("Reviewed", self.reviewed_combo)
        main.addRow("Time budget", self.budget_spin)
        # Everything in a scroll area: a dock shared with other widgets then
        # scrolls instead of squeezing the fields over each other.
        content = QWidget()
        # tall enough for the status, the curve and Accept/Discard once a result is in
        self._scroll = scrolling_content(self, content, min_height=300)
        layout = QVBoxLayout(content)
        layout.addLayout(top)
        layout.addWidget(self.pairs)
        layout.addWidget(self.pair_label)
        layout.addWidget(self.set_label)
        layout.addWidget(self.set_list)
        set_buttons = QHBoxLayout()
        for button in (self.remove_set_button, self.save_set_button, self.load_set_button):
            set_buttons.addWidget(button)
        layout.addLayout(set_buttons)
        layout.addLayout(main)
        layout.addWidget(self.options)
        layout.addWidget(self.keep_preview_check)
        layout.addLayout(run_buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot)
        layout.addWidget(self.metric_label)
        layout.addWidget(self.warning_label)
        layout.addLayout(decide)
        layout.addLayout(more)
        layout.addStretch()

        self.pairs.changed.connect(self._update_state)
        self.mode_combo.currentIndexChanged.connect(self._update_mode_hint)
        self.finetune_button.clicked.connect(self.fine_tune)
        self.stop_button.clicked.connect(self.stop)
        self.accept_button.clicked.connect(self.accept)
        self.discard_button.clicked.connect(self.discard)
        self.revert_button.clicked.connect(self.revert)
        self.save_button.clicked.connect(self._on_save_clicked)
        self.remove_set_button.clicked.connect(self._remove_from_set)
        self.save_set_button.clicked.connect(self._on_save_set_clicked)
        self.load_set_button.clicked.connect(self._on_load_set_clicked)
        self.set_list.currentRowChanged.connect(self._update_state)
        self.shortcuts = [
            shortcuts.add_shortcut(self, self.finetune_button, shortcuts.FINE_TUNE),
            shortcuts.add_shortcut(self, self.stop_button, shortcuts.STOP_TRAINING),
        ]

    def _on_layers_changed(self, *_: Any) -> None:
        self.pairs.refresh()
        self._refresh_reviewed()

    def _on_selection_changed(self, *_: Any) -> None:
        if not self.is_running:
            self.pairs.follow_selection()

    # ---------------------------------------------------------- training set
    def _refresh_training_set(self, *_: Any) -> None:
        """List the session's training set."""
        items = self.session.corrections.items()
        self.set_list.clear()
        for item in items:
            self.set_list.addItem(item.describe())
        count = len(items)
        self.set_label.setText(f"Training set: {count} earlier image{'s' if count != 1 else ''}")
        self._update_state()

    def _remove_from_set(self) -> None:
        row = self.set_list.currentRow()
        items = self.session.corrections.items()
        if 0 <= row < len(items):
            self.session.corrections.remove(items[row].name)

    def save_training_set_to(self, folder: str | Path) -> list[Path]:
        """Write the session's training set to ``folder`` (images/ and labels/); [] if it failed (shown)."""
        try:
            written = save_training_set([c.annotated for c in self.session.corrections.items()], folder)
        except UserError as exc:
            show_error(f"Could not save the training set: {exc}")
            return []
        self.status_label.setText(f"Saved {len(self.session.corrections)} images and their labels in {folder}.")
        return written

    def load_training_set_from(self, folder: str | Path) -> int:
        """Add the images of training-set ``folder`` to the session's set; how many (0 if it failed, shown)."""
        try:
            images = load_training_set(folder)
        except UserError as exc:
            show_error(f"Could not load the training set: {exc}")
            return 0
        self.session.corrections.put(images, mode=self.mode, origin=Path(folder).name)
        self.status_label.setText(
            f"Added {len(images)} images from {folder} to the training set (as {self.mode_combo.currentText()})."
        )
        return len(images)

    def _on_save_set_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the training set into a folder")
        if folder:
            self.save_training_set_to(folder)

    def _on_load_set_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Load a training-set folder (images/ and labels/)")
        if folder:
            self.load_training_set_from(folder)

    def _refresh_reviewed(self, *_: Any) -> None:
        """List 'Whole planes' and every Shapes layer, keeping the current choice."""
        current = self.reviewed_combo.currentData()
        self.reviewed_combo.blockSignals(True)
        self.reviewed_combo.clear()
        self.reviewed_combo.addItem("Whole planes", None)
        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Shapes):
                self.reviewed_combo.addItem(f"Inside shapes of '{layer.name}'", weakref.ref(unwrap_proxy(layer)))
                if current is not None and current() is unwrap_proxy(layer):
                    self.reviewed_combo.setCurrentIndex(self.reviewed_combo.count() - 1)
        self.reviewed_combo.blockSignals(False)

    def reviewed_layer(self) -> Any:
        """The Shapes layer marking reviewed regions, or None for whole planes."""
        ref = self.reviewed_combo.currentData()
        return None if ref is None else ref()

    def _is_preview(self, layer: Any) -> bool:
        return unwrap_proxy(layer) in self._previews

    # ------------------------------------------------------------------ state
    @property
    def mode(self) -> str:
        """``"corrections"`` or ``"scribbles"``."""
        return self.mode_combo.currentData()

    def settings(self) -> TrainingSettings:
        """The training recipe the controls describe (time budget and advanced options)."""
        budget = self.budget_spin.value()
        return self.options.settings(max_seconds=float(budget) if budget else None)

    def _on_model_changed(self, *_: Any) -> None:
        model = self.session.model
        if model is None:
            self.model_label.setText("none: choose one in the Segment widget")
        else:
            self.model_label.setText(model.description.name)
            self.model_label.setToolTip(
                literal_tip(f"{self.session.source}\nChoose another model in the Segment widget.")
            )
        self._update_mode_hint()

    def _update_mode_hint(self, *_: Any) -> None:
        model = self.session.model
        names = model.description.class_names if model is not None else ["background", "class 1", "..."]
        separates = model is not None and model.description.instance_rule.method != "none"
        scribbles = ", ".join(f"{i + 1} = {name}" for i, name in enumerate(names))
        classes = ", ".join(f"{i} = {name}" for i, name in enumerate(names))
        if self.mode == "scribbles":
            hint = f"Paint strokes: {scribbles}. Unpainted pixels (0) are ignored."
        elif separates:
            hint = (
                "Correct the Segment result: one label value per object, 0 = background. "
                "Every pixel of the planes used counts, so fix all mistakes there."
            )
        else:
            hint = f"Correct the classes: {classes}. Every pixel of the planes used counts."
        self.mode_hint.setText(hint)
        self.mode_combo.setToolTip(
            literal_tip(
                "How your labels layer is read.\n"
                "Corrections: a dense Segment result you corrected (paint, erase, fill). "
                + (
                    "Each object has its own value, 0 is background; "
                    if separates
                    else f"Values are classes ({classes}); "
                )
                + "all pixels of the planes used are taken as right.\n"
                f"Sparse scribbles: a few strokes; 0 = not annotated (ignored), {scribbles}."
            )
        )
        self._update_state()

    def _layout_of(self, layer: Any, model: SegmentationModel) -> ImageLayout:
        data = layer.data[0] if layer.multiscale else layer.data
        return infer_layout(tuple(data.shape), in_channels=model.config.in_channels, rgb=bool(layer.rgb))

    def _update_state(self, *_: Any) -> None:
        model = self.session.model
        pairs = self.pairs.pairs()
        is_stack = False
        for image, _labels in pairs:
            if image is not None:
                try:
                    is_stack |= bool(self._layout_of(image, model).stack_axes) if model else image.ndim > 2
                except ImageLayoutError:
                    is_stack |= image.ndim > 2
        for button in (self.all_planes, self.current_plane):
            button.setEnabled(is_stack)
        missing = [image.name for image, labels in pairs if image is not None and labels is None]
        if self.is_running:
            reason = "Fine-tuning is running; wait for it or press Stop."
        elif model is None:
            reason = "Choose a model in the Segment widget first."
        elif not any(image is not None for image, _ in pairs) and self.pairs.rows[0].image_combo.count():
            reason = "Choose the image to train on (a hidden image layer is never chosen for you)."
        elif not any(image is not None for image, _ in pairs):
            reason = "Add or open an image layer first."
        elif missing:
            reason = (
                f"Choose the labels layer painted for {missing[0]!r} (or remove its row): "
                "segment it and correct the result, or add a Labels layer and paint scribbles."
            )
        else:
            reason = ""
        self.finetune_button.setEnabled(not reason)
        self._show_plan(pairs)
        shortcuts.set_tip(
            self.finetune_button,
            reason
            or f"Train a copy of {model.description.name!r} on the labels; "  # type: ignore[union-attr]
            "the model in use changes only when you press Accept.",
        )
        can_stop = self.is_running and self._job is not None and not self._job.stop.is_set()
        self.stop_button.setEnabled(can_stop)
        if can_stop:
            stop_tip = "End training now and keep the best model validated so far (no last validation)."
        elif self.is_running:
            stop_tip = "Stopping: training ends after the current step."
        else:
            stop_tip = "Nothing to stop: no training is running."
        shortcuts.set_tip(self.stop_button, stop_tip)
        self.accept_button.setEnabled(self._pending)
        self.discard_button.setEnabled(self._pending)
        waiting = "" if self._pending else " (No fine-tuned model waits for a decision; run Fine-tune first.)"
        self.accept_button.setToolTip(
            "Use the fine-tuned model in Segment; the model before stays available (Revert)." + waiting
        )
        self.discard_button.setToolTip("Forget the fine-tuned model; the model in use does not change." + waiting)
        self.save_button.setEnabled(self.result is not None and self._saveable)
        self.save_button.setToolTip(
            "Write the fine-tuned model to a .unet.safetensors file (to reuse or share)."
            if self.save_button.isEnabled()
            else "There is no fine-tuned model to save; run Fine-tune first."
        )
        self.bioimageio_button.refresh(busy=self.is_running)
        self.revert_button.setEnabled(self.session.can_revert)
        previous = self.session.previous_model
        self.revert_button.setToolTip(
            literal_tip(f"Go back to {previous.description.name!r} ({self.session.previous_source}).")
            if previous is not None
            else "There is no previous model to go back to."
        )

    def _show_plan(self, pairs: list[tuple[Any, Any]]) -> None:
        """Say what the next Fine-tune trains on; enable the training-set buttons."""
        chosen = [(image, labels) for image, labels in pairs if image is not None and labels is not None]
        names = {image.name for image, _ in chosen}
        earlier = self.session.corrections.for_training(self.mode, besides=sorted(names))
        parts = [f"{image.name!r} with {labels.name!r}" for image, labels in chosen]
        if earlier:
            parts.append(f"{len(earlier)} earlier image{'s' if len(earlier) != 1 else ''} of the training set")
        self.pair_label.setText(("Trains on " + " + ".join(parts) + ".") if parts else "Nothing to train on yet.")
        has_set = len(self.session.corrections) > 0
        self.save_set_button.setEnabled(has_set and not self.is_running)
        self.remove_set_button.setEnabled(self.set_list.currentRow() >= 0 and not self.is_running)
        self.load_set_button.setEnabled(not self.is_running)

    # ------------------------------------------------------------------ running
    def fine_tune(self) -> GeneratorWorker | None:
        """Start fine-tuning on the chosen layers; returns the worker (None if refused).

        The labels are copied now, so painting during training changes
        nothing; the session's model is not touched (see :meth:`accept`).
        """
        self._update_state()
        model = self.session.model
        if not self.finetune_button.isEnabled() or model is None or self._runner.closed:
            return None
        try:
            settings = self.settings()
            images, preview = self._annotated_images(model)
        except UserError as exc:  # labels that do not fit the image, an image that does not fit the model
            show_error(f"Cannot fine-tune: {exc}")
            return None
        earlier = self.session.corrections.for_training(self.mode, besides=[item.name for item in images])
        request = FineTuneRequest(
            model=model,
            images=[*images, *earlier],
            mode=self.mode,
            settings=settings,
            validation_fraction=self.options.validation_fraction,
            from_scratch=self.options.scratch_check.isChecked(),
            record={
                "layers": [item.name for item in images],
                "earlier_images": [item.name for item in earlier],
                "base_model": self.session.source,
            },
        )
        stop = threading.Event()
        job = _RunningJob(stop, settings.max_seconds, images=images, mode=self.mode)
        trained_on = [labels for image, labels in self.pairs.pairs() if image is not None and labels is not None]
        for labels in trained_on:
            mark_edited(labels)  # trained on: Segment never overwrites it
        self.session.set_training(trained_on)
        self._remove_hidden_previews()
        if preview is not None:
            self._start_preview(job, *preview)
        make_job = partial(
            finetune_job,
            request,
            stop=stop,
            preview=None
            if preview is None
            else plane_preview(
                preview[1], plane=lambda: job.plane, every=PREVIEW_SECONDS, device=settings.device, stop=stop
            ),
        )
        handlers = JobHandlers(
            done=partial(self._on_returned, job),
            failed=self._on_failed,
            cancelled=partial(self.status_label.setText, "Stopped; the model in use is unchanged."),
            yielded=partial(self._on_yielded, job),
            ended=partial(self._on_finished, job),
        )
        desc = f"Fine-tuning {model.description.name}"
        worker = self._runner.start(make_job, handlers, desc=desc, fraction=partial(_fraction, job), stop=stop.set)
        if worker is None:
            self.session.set_training([])
        self._job = job
        self.plot.clear()
        self.metric_label.setText("")
        self.warning_label.hide()
        self.status_label.setText("Preparing the annotation...")
        self._update_state()
        return worker

    def _start_preview(self, job: _RunningJob, layer: Any, source: PreviewSource) -> None:
        """Preview ``layer`` during ``job``: the plane in view, in a preview layer added now."""
        job.preview = make_target(layer, source.layout)
        job.plane = shown_plane(self.viewer, layer, source.layout)
        self.viewer.dims.events.current_step.connect(self._on_dims_changed)
        # Adding a layer stalls napari's GUI thread for a few tenths of a second: do it now, at the
        # click, not while the user paints during training; the previews then only write into it.
        self._preview_layer(job.preview)

    def _annotated_images(self, model: SegmentationModel) -> tuple[list[AnnotatedImage], Any]:
        """Copy the chosen layers' annotation (GUI thread); also what to preview."""
        images = []
        preview = None
        for image_layer, labels_layer in self.pairs.pairs():
            if image_layer is None:
                continue
            layout = self._layout_of(image_layer, model)
            expected = image_shape(image_layer)
            if tuple(labels_layer.data.shape) != expected:
                raise AnnotationError(
                    f"the labels layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)} but the "
                    f"image {image_layer.name!r} needs {expected}; paint into a labels layer made for this image "
                    "(e.g. its Segment result)"
                )
            plane = None
            if self.current_plane.isChecked() and layout.stack_axes:
                plane = shown_plane(self.viewer, image_layer, layout)
            data = image_layer.data[0] if image_layer.multiscale else image_layer.data
            shapes = self.reviewed_layer() if self.mode == "corrections" else None
            reviewed = None if shapes is None else reviewed_mask(shapes, image_layer, expected)
            if reviewed is not None and not reviewed.any():
                raise AnnotationError(
                    f"no shape of {shapes.name!r} lies on {image_layer.name!r}; draw a rectangle "
                    "over the part you checked, or choose 'Whole planes'"
                )
            images.append(
                AnnotatedImage(
                    name=image_layer.name,
                    image=data,
                    labels=np.asarray(labels_layer.data).copy(),
                    channel_axis=layout.channel_axis if not image_layer.rgb else None,
                    rgb=bool(image_layer.rgb),
                    plane=plane,
                    reviewed=reviewed,
                    diameter=_segmented_diameter(labels_layer),
                )
            )
            if preview is None or (image_layer.visible and not preview[0].visible):
                preview = (image_layer, PreviewSource(data, layout))  # the image in view, where it is
        return images, preview

    def stop(self) -> None:
        """End training after the current step; the best model so far becomes the result."""
        if self._job is not None:
            self._job.stop.set()
            self.status_label.setText("Stopping after the current step...")
            self._update_state()

    def _on_dims_changed(self, *_: Any) -> None:
        job = self._job
        if job is not None and job.preview is not None:
            job.plane = shown_plane(self.viewer, job.preview.source, job.preview.layout)

    def _on_yielded(self, job: _RunningJob, report: Progress | PreviewUpdate) -> None:
        if isinstance(report, PreviewUpdate):
            self._show_preview(job, report)
            return
        if report.stage == Stage.NOTICE:
            show_info(report.message)
            return
        if report.stage == Stage.CALIBRATE:
            if not job.stop.is_set():
                self.status_label.setText(f"Training done; {report.message}...")
            return
        if report.stage == Stage.PREPARE:
            if "held_back" in report.data:
                self._show_held_back(report.data["held_back"])
            if not job.stop.is_set():
                self.status_label.setText(f"Preparing: {report.message}...")
            return
        data = report.data
        if data.get("metric_name") and not job.metric_name:
            job.metric_name = data["metric_name"]
            self.plot.metric_name = job.metric_name
        self.plot.add_point(report.done, data.get("loss"), data.get("metric"))
        job.last.update({k: v for k, v in data.items() if v is not None})
        seconds = data.get("seconds", 0.0)
        if "loss" in data and not job.stop.is_set():
            text = f"Step {report.done}: loss {data['loss']:.4f}, {seconds:.0f} s"
            text += f" of {job.budget:.0f} s" if job.budget else ""
            if job.metric_name and job.last.get("best") is not None:
                text += f"; best {job.metric_name} {job.last['best']:.3f}"
            self.status_label.setText(text)

    def _preview_layer(self, target: Target) -> Any:
        """The preview layer of ``target`` (emptied and shown), added to the viewer if it is not there."""
        existing = self.session.results.find(self.viewer, target.source, "preview")
        layer = existing[0] if existing else None
        if layer is not None and tuple(layer.data.shape) == target.shape:
            if layer.data.any():
                layer.data = np.zeros(target.shape, np.uint32)
            layer.visible = True
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = napari.layers.Labels(
            np.zeros(target.shape, np.uint32), name=preview_name(target.source.name), **target.geometry, opacity=0.5
        )
        self._previews.add(layer)  # before it is added, so the layer choosers never list it
        self.session.results.bind(target.source, "preview", [layer])
        _add_unselected(self.viewer, layer)
        return layer

    def _show_held_back(self, masks: dict[str, np.ndarray]) -> None:
        """Show what this run holds back for validation: a labels layer over each image (replaced next run)."""
        for layer in self._held_back_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._held_back_layers = []
        for image_layer, labels_layer in self.pairs.pairs():
            mask = masks.get(image_layer.name) if image_layer is not None else None
            if mask is None or not mask.any():
                continue
            layer = napari.layers.Labels(
                mask.astype(np.uint8),
                name=f"{image_layer.name} held back (validation)",
                scale=labels_layer.scale,
                translate=labels_layer.translate,
                opacity=0.25,
            )
            self._previews.add(layer)  # the layer choosers never list it
            self._held_back_layers.append(layer)
            _add_unselected(self.viewer, layer)

    def _remove_hidden_previews(self) -> None:
        """Remove preview layers hidden at the end of a training (see :meth:`_on_finished`)."""
        for layer in list(self.viewer.layers):
            if unwrap_proxy(layer) in self._previews and not layer.visible and not self.keep_preview_check.isChecked():
                self.viewer.layers.remove(layer)

    def _show_preview(self, job: _RunningJob, update: PreviewUpdate) -> None:
        target = job.preview
        if target is None or all(
            unwrap_proxy(layer) is not unwrap_proxy(target.source) for layer in self.viewer.layers
        ):
            return  # no preview for an image layer the user deleted
        existing = self.session.results.find(self.viewer, target.source, "preview")
        if existing and tuple(existing[0].data.shape) == target.shape:
            layer = existing[0]
        else:
            layer = self._preview_layer(target)  # the user deleted it during training
        if update.plane:
            layer.data[update.plane] = update.labels
            layer.refresh()
        else:
            layer.data = update.labels.astype(np.uint32, copy=False)

    def _on_returned(self, job: _RunningJob, result: TrainingResult) -> None:
        if result.steps_done == 0:
            self.status_label.setText("Stopped before training started; the model in use is unchanged.")
            return
        model = result.model
        model.description.name = _FINE_TUNED.sub("", model.description.name) + " (fine-tuned)"
        self.session.corrections.put(job.images, mode=job.mode)  # trained on: kept for the next rounds
        self.result = result
        self._pending = True
        self._saveable = True
        how = "stopped" if result.stopped else "done"
        self.status_label.setText(
            f"Training {how}: {result.steps_done} steps in {result.seconds:.0f} s. "
            "Accept to segment with the fine-tuned model, or Discard it."
        )
        self._show_metrics(result)
        # In a dock shared with Segment the buttons are below the fold: bring the status into view,
        # then the decision below it (after the pending layout update: the status and metric lines
        # just changed height)
        QTimer.singleShot(0, self._show_decision)

    def _show_decision(self) -> None:
        """Scroll so that the status line and the Accept/Discard/Revert buttons are in view; the buttons first.

        With a long warning under the verdict both may not fit (the tour's 1280 x 800 window, a
        model fitted on 3 objects): then the buttons stay in view and the status scrolls out.
        """
        self._scroll.ensureWidgetVisible(self.status_label)
        self._scroll.ensureWidgetVisible(self.revert_button)

    def _show_metrics(self, result: TrainingResult) -> None:
        verdict = result.verdict
        warning = ""
        if verdict is None or verdict.status == "none":
            losses = [entry["loss"] for entry in result.log if "loss" in entry]
            text = "Nothing was held back for validation"
            if losses:
                text += f"; loss {losses[0]:.3f} → {losses[-1]:.3f}"
            if verdict is not None and verdict.corrections is not None:
                text += f"; {verdict.corrections.sentence()}"
            self.metric_label.setText(text + ".")
        else:
            self.metric_label.setText(verdict.summary())
            warning = verdict.warning()
            if verdict.kept_previous:
                warning += " Discard it: it is the model you had."
        for text in result.warnings:
            warning = f"{warning} {text}".strip()
        self.warning_label.setText(warning)
        self.warning_label.setVisible(bool(warning))

    def _on_failed(self, error: UserError) -> None:
        show_error(f"Cannot fine-tune: {error}")
        self.status_label.setText(f"Failed: {error}")

    def _on_finished(self, job: _RunningJob) -> None:
        """The job is over (also when the widget was closed): hide or remove the preview."""
        closed = self._runner.closed
        if self._job is job:
            self._job = None
            self.session.set_training([])
        if not closed:
            self._update_state()
        if job.preview is not None:
            self.viewer.dims.events.current_step.disconnect(self._on_dims_changed)
            for layer in self.session.results.find(self.viewer, job.preview.source, "preview"):
                if closed or (not self._pending and not self.keep_preview_check.isChecked()):
                    self.viewer.layers.remove(layer)  # failed or stopped before training: nothing to decide
                elif not self.keep_preview_check.isChecked():
                    # hidden now, removed at Accept, Discard or the next Fine-tune: removing a
                    # layer stalls napari for a few tenths of a second, just as the result arrives
                    layer.visible = False

    # ----------------------------------------------------------------- results
    def accept(self) -> None:
        """Make the fine-tuned model the viewer's model (Segment uses it); Revert goes back."""
        if not self._pending or self.result is None:
            return
        model = self.result.model
        self._pending = False
        self._remove_hidden_previews()
        saved = self._save_accepted(model)
        source = str(saved) if saved else f"{model.description.name}, {time.strftime('%H:%M:%S')} (not saved)"
        self.session.set_model(model, source)
        kept = f"It was saved as {saved.name} among your models" if saved else "It could not be saved (see the message)"
        self.status_label.setText(
            f"Segment now uses {model.description.name!r}. {kept}; Revert goes back to the previous model."
        )
        self._update_state()

    def _save_accepted(self, model: SegmentationModel) -> Path | None:
        """Save an accepted model into the user's models folder; None (and a message) if that failed.

        The model stays in memory either way (Segment uses it; *Save model...* can write it elsewhere).
        """
        history = model.description.training_history[-1] if model.description.training_history else {}
        data = [*history.get("layers", []), *history.get("earlier_images", [])]
        base = str(history.get("base_model") or self.session.source)
        try:
            return save_user_model(model, base_model=base, training_data=data, verdict=self.metric_label.text())
        except (OutputError, OSError) as exc:
            show_error(
                f"The fine-tuned model is in use but could not be saved among your models: {exc}. "
                "Use 'Save model...' to write it elsewhere before closing napari."
            )
            return None

    def discard(self) -> None:
        """Forget the fine-tuned model; the model in use does not change."""
        if not self._pending:
            return
        self._pending = False
        self._saveable = False
        self._remove_hidden_previews()
        self.status_label.setText("Discarded; the model in use is unchanged.")
        self._update_state()

    def revert(self) -> None:
        """Go back to the session's previous model (pressing it again swaps back)."""
        if self.session.can_revert:
            self.session.revert()
            self.status_label.setText(f"Segment now uses {self.session.model.description.name!r} again.")

    def save_model_to(self, path: str | Path) -> Path | None:
        """Save the fine-tuned model to ``path`` (atomically); None if it could not be written.

        A missing or read-only folder or a full disk is shown as a notification;
        the model stays in memory so it can be saved elsewhere.
        """
        if self.result is None or not self._saveable:
            show_error("There is no fine-tuned model to save; run Fine-tune first.")
            return None
        path = Path(path)
        if not path.name.endswith(".safetensors"):
            path = path.with_name(path.name + ".unet.safetensors")
        try:
            written = save_model(self.result.model, path)
        except OSError as exc:
            show_error(f"Could not save the model: {exc}")
            return None
        self.status_label.setText(f"Saved to {written}.")
        return written

    def _model_to_export(self) -> SegmentationModel | None:
        """The fine-tuned model when there is one, else the model Segment uses (shipped or loaded)."""
        return self.result.model if self.result is not None and self._saveable else self.session.model

    def _on_save_clicked(self) -> None:
        if self.result is None:
            return
        stem = re.sub(r"[^\w.-]+", "_", self.result.model.description.name).strip("_") or "fine-tuned"
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save the fine-tuned model",
            f"{stem}.unet.safetensors",
            "napari-unet models (*.unet.safetensors);;All files (*)",
        )
        if path:
            self.save_model_to(path)


def _fraction(job: _RunningJob, report: Progress | PreviewUpdate) -> float | None:
    """How far training is: steps done, or time spent of the time budget, whichever is further."""
    if not isinstance(report, Progress) or report.stage in (Stage.NOTICE, Stage.PREPARE, Stage.CALIBRATE):
        return None
    fraction = report.done / report.total if report.total else 0.0
    if job.budget:
        fraction = max(fraction, report.data.get("seconds", 0.0) / job.budget)
    return min(fraction, 1.0)


def _segmented_diameter(labels_layer: Any) -> float | None:
    """The objects' diameter Segment used for this result layer (None: not a result, or not known)."""
    mark = unwrap_proxy(labels_layer).metadata.get(RESULT_KEY)
    value = mark.get("object_diameter_px") if isinstance(mark, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
