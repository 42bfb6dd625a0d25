"""The Segment widget: image layer in, Labels (or probability) layers out.

The widget is thin: it turns a layer into an array, runs
:func:`napari_unet.core.segment_job` with the widget's
:class:`~napari_unet._widgets.forms.job_runner.JobRunner` (worker thread,
progress, Cancel, close guard) and turns the result back into layers (on the
GUI thread, bound to the layer the job started from).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import napari.layers
from napari.qt.threading import GeneratorWorker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_unet._widgets.forms import shortcuts
from napari_unet._widgets.forms.devices import device_combo
from napari_unet._widgets.forms.diameter_field import DiameterField
from napari_unet._widgets.forms.folding import set_fold_tip
from napari_unet._widgets.forms.job_runner import JobHandlers, JobRunner, RunsJobs
from napari_unet._widgets.forms.lifetime import connect_for_life
from napari_unet._widgets.forms.name_combo import fit_names
from napari_unet._widgets.forms.notify import show_error, show_info, show_warning, warn_install_conflict
from napari_unet._widgets.forms.plain_text import literal_tip, plain_label
from napari_unet._widgets.forms.scrolling import scrolling_content
from napari_unet._widgets.layers.channel_hint import channel_notice
from napari_unet._widgets.layers.large_images import is_large, result_path, show_lazy_result
from napari_unet._widgets.layers.layer_events import follow_layers
from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet._widgets.layers.results import RESULT_KEY, Target, make_target, set_contour, shown_plane
from napari_unet._widgets.layers.session import session_for
from napari_unet._widgets.layers.warm_up import start_warm_up
from napari_unet.core import (
    Progress,
    SegmentationModel,
    SegmentationResult,
    Stage,
    load_model,
    load_named_model,
    segment_job,
    shipped_models,
)
from napari_unet.core.blockwise.to_zarr import BlockwiseResult, segment_to_zarr_job
from napari_unet.core.errors import UserError
from napari_unet.core.inference.layout import ImageLayout, ImageLayoutError, infer_layout
from napari_unet.core.inference.object_scale import ObjectScale
from napari_unet.core.inference.options import InferenceOptions
from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.user_models import remove_user_model, user_models

log = logging.getLogger(__name__)

#: Item data of the "Load model file..." entry of the model chooser.
_LOAD_FILE = "\x00load-file"
#: (value, text, tooltip) of the output kinds.
_OUTPUTS = (
    ("instances", "Objects (one label each)", "A Labels layer with one ID per object (nucleus, cell)."),
    ("classes", "Classes", "A Labels layer with the most likely class of every pixel (e.g. 1 interior, 2 boundary)."),
    ("probabilities", "Probabilities", "One image layer per class with the class probability (0 to 1) of every pixel."),
)
_ROW_LABELS = (
    "Image", "Model", "Output", "Object size", "Seeds", "Show", "Planes", "Device", "Tile size", "Batch size",
    "Channel axis", "Link planes",
)  # fmt: skip
_STITCH_TIP = (
    "Objects only, whole stack: give the pieces of one object in neighbouring planes one ID when they overlap "
    "by at least this IoU (e.g. 0.25), along the stack axis just before Y (Z of a ZYX or TZYX image). "
    "off: every plane keeps its own IDs."
)
_SEEDS_TIP = (
    "Objects grow from seeds: the pixels whose interior probability is above this. Raise it (e.g. 0.90) "
    "when Segment cuts cells into pieces or joins two similar cells into one; lower it when a faint or small "
    "cell is missing or taken in by a brighter neighbour (it has no seed). model: the threshold stored in the "
    "model, which Fine-tune fits to your corrections; a number you set stays when the model changes (also "
    "after Fine-tune)."
)
_OUTLINE_TIP = (
    "Draw the objects of the Labels result as outlines (contour 1) instead of filled, so the image "
    "shows through; the same as the layer's 'contour' control."
)
_PROBABILITIES_TIP = (
    "Besides the Labels result, add the probability (0 to 1) of every class as image layers "
    "'<image> [U-Net probabilities] <class>'. Needs memory for one float image per class."
)


@dataclass
class _RunningJob:
    """A started job: where its result goes.

    ``dropped`` says why the job's result must not be shown (its image layer
    was deleted); empty while the result is wanted.
    """

    target: Target
    dropped: str = ""
    notice: str = ""  # what the user should know about how the image was read (channels)
    seeds: str = ""  # the Seeds field's threshold, when it replaced the model's


class SegmentWidget(RunsJobs, QWidget):
    """Segment an image layer with a U-Net.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it, possibly as a proxy).

    Attributes
    ----------
    worker : napari.qt.threading.GeneratorWorker or None
        The worker of the last job started (still set after it finished).
    session : ModelSession
        The viewer's model session, shared with the other napari-unet widgets.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        start_warm_up()  # first-use imports off the GUI thread, before the first result arrives
        warn_install_conflict()  # another napari-unet distribution in this environment: say what to do
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._job: _RunningJob | None = None
        self._shipped = shipped_models()
        self._user_paths: set[str] = set()  # chooser entries of the user's saved models
        self._build()
        self._runner = JobRunner(self, status=self.status_label)  # closing the dock or the viewer stops the job
        follow_layers(self, self.viewer, self._refresh_images, on_removed=self._on_layer_removed)
        connect_for_life(self, self.session.model_changed, self._on_model_changed)
        connect_for_life(self, self.session.training_changed, self._update_state)
        connect_for_life(self, self.session.results.edits_kept, self._on_edits_kept)
        self._showing = False  # True while this widget writes a result (edits_kept is then about it)
        if self.session.model is None:
            self._load_first_shipped_model()
        self._on_model_changed(self.session.model)
        self._refresh_images()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.image_combo = fit_names(QComboBox())
        self.image_combo.setToolTip("The image layer to segment (only image layers are listed).")
        self.image_combo.setPlaceholderText("no image layer")
        # as wide as the shipped models' names; longer names (model files, saved models) are elided
        self.model_combo = fit_names(QComboBox(), fits=[m.title for m in self._shipped])
        self.model_combo.setToolTip("The U-Net to use: a model that comes with napari-unet, or a model file.")
        self.model_combo.setPlaceholderText("choose a model")
        self.remove_model_button = QPushButton("Remove")
        self.remove_model_button.setToolTip("Delete the chosen saved fine-tuned model from your models folder.")
        model_row = QHBoxLayout()
        model_row.setContentsMargins(0, 0, 0, 0)
        model_row.addWidget(self.model_combo, stretch=1)
        model_row.addWidget(self.remove_model_button)
        self.model_info = plain_label()  # class names come from the model file
        self.model_info.setWordWrap(True)
        self.model_info.setToolTip("Classes and input channels of the chosen model.")
        self.output_combo = QComboBox()
        for value, text, tip in _OUTPUTS:
            self.output_combo.addItem(text, value)
            self.output_combo.setItemData(self.output_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.output_combo.setToolTip("What to make: objects, classes or class probabilities.")
        self.whole_stack = QRadioButton("Whole stack")
        self.whole_stack.setToolTip("Segment every plane of a stack (Z, time).")
        self.current_plane = QRadioButton("Current plane")
        self.current_plane.setToolTip(
            "Segment only the plane shown in the viewer; the other planes of the result are left as they are."
        )
        self.whole_stack.setChecked(True)
        self._planes_group = QButtonGroup(self)
        self._planes_group.addButton(self.whole_stack)
        self._planes_group.addButton(self.current_plane)
        planes = QHBoxLayout()
        planes.setContentsMargins(0, 0, 0, 0)
        planes.addWidget(self.whole_stack)
        planes.addWidget(self.current_plane)
        planes.addStretch()

        self.diameter_field = DiameterField(self.viewer)
        self.scale_label = plain_label()  # names the model
        self.scale_label.setWordWrap(True)
        self.scale_label.setToolTip("The object size the last segmentation used, and how much the image was resampled.")

        self.seed_spin = QDoubleSpinBox()
        self.seed_spin.setRange(0.0, 0.99)
        self.seed_spin.setSingleStep(0.05)
        self.seed_spin.setDecimals(2)
        self.seed_spin.setSpecialValueText("model")  # names the model's own threshold once one is chosen
        self.seed_spin.setToolTip(_SEEDS_TIP)

        self.device_combo = device_combo("Run")
        self.device_combo.setToolTip("Where the network runs; a missing GPU falls back to the CPU.")
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip(
            "Largest tile the network sees at once. auto: chosen from free memory. "
            "Smaller tiles need less memory; results are the same."
        )
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 64)
        self.batch_spin.setSpecialValueText("auto")
        self.batch_spin.setToolTip("Tiles sent to the network at once. auto: chosen from free memory.")
        self.channel_spin = QSpinBox()
        self.channel_spin.setRange(-1, 0)
        self.channel_spin.setSpecialValueText("auto")
        self.channel_spin.setValue(-1)
        self.channel_spin.setToolTip(
            "Axis of the image layer that holds the channels, for multichannel models. "
            "auto: guessed from the model; RGB layers always use their colours."
        )
        self.stitch_spin = QDoubleSpinBox()
        self.stitch_spin.setRange(0.0, 1.0)
        self.stitch_spin.setSingleStep(0.05)
        self.stitch_spin.setDecimals(2)
        self.stitch_spin.setSpecialValueText("off")
        self.stitch_spin.setPrefix("IoU ≥ ")
        self.stitch_spin.setToolTip(_STITCH_TIP)
        self.amp_check = QCheckBox("Mixed precision (faster)")
        self.amp_check.setChecked(True)
        self.amp_check.setToolTip(
            "bfloat16 on NVIDIA GPUs and on CPUs with bfloat16 units (AMX, AVX512-BF16): about 2x faster, "
            "probabilities within a few percent. Off: float32 everywhere."
        )

        self.outline_check = QCheckBox("Show outlines")
        self.outline_check.setToolTip(_OUTLINE_TIP)
        self.probabilities_check = QCheckBox("Also add probability layers")
        self.probabilities_check.setToolTip(_PROBABILITIES_TIP)
        shown = QVBoxLayout()
        shown.setContentsMargins(0, 0, 0, 0)
        shown.setSpacing(2)
        shown.addWidget(self.outline_check)
        shown.addWidget(self.probabilities_check)

        self.advanced = QCollapsible("Advanced options", expandedIcon="▼", collapsedIcon="▶")
        # One label width for both forms, so the advanced fields line up with the others.
        label_width = max(self.fontMetrics().horizontalAdvance(text) for text in _ROW_LABELS) + 8
        advanced_form = QWidget()
        form = QFormLayout(advanced_form)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for text, field in (
            ("Device", self.device_combo),
            ("Tile size", self.tile_spin),
            ("Batch size", self.batch_spin),
            ("Channel axis", self.channel_spin),
            ("Link planes", self.stitch_spin),
        ):
            form.addRow(_row_label(text, label_width), field)
        form.addRow(self.amp_check)
        self.advanced.addWidget(advanced_form)
        set_fold_tip(self.advanced, "Device, tile size and channels; the defaults suit most images.")
        self.advanced.layout().setContentsMargins(0, 0, 0, 0)
        self.advanced.content().layout().setContentsMargins(0, 0, 0, 0)

        self.segment_button = QPushButton("Segment")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running segmentation; the previous result is kept.")
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button, stretch=2)
        buttons.addWidget(self.cancel_button, stretch=1)
        self.status_label = plain_label()  # messages name layers and files
        self.status_label.setWordWrap(True)
        self.status_label.setToolTip("What the last segmentation did.")

        main = QFormLayout()
        main.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        main.addRow(_row_label("Image", label_width), self.image_combo)
        main.addRow(_row_label("Model", label_width), model_row)
        main.addRow(_row_label("", label_width), self.model_info)
        main.addRow(_row_label("Output", label_width), self.output_combo)
        main.addRow(_row_label("Object size", label_width), self.diameter_field)
        self._scale_row_label = _row_label("", label_width)
        main.addRow(self._scale_row_label, self.scale_label)
        self._show_scale_row("")  # no empty line under Object size before the first run
        main.addRow(_row_label("Seeds", label_width), self.seed_spin)
        main.addRow(_row_label("Show", label_width), shown)
        main.addRow(_row_label("Planes", label_width), planes)
        content = QWidget()
        self._scroll = scrolling_content(self, content, grows=False)
        layout = QVBoxLayout(content)
        layout.addLayout(main)
        layout.addWidget(self.advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addStretch()

        self.image_combo.currentIndexChanged.connect(self._update_state)
        self.channel_spin.valueChanged.connect(self._update_state)
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.currentIndexChanged.connect(self._update_remove_button)
        self.remove_model_button.clicked.connect(self._on_remove_clicked)
        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.output_combo.currentIndexChanged.connect(self._update_state)
        self._planes_group.buttonToggled.connect(self._update_state)
        self.outline_check.toggled.connect(self._show_outlines)
        self.shortcuts = [
            shortcuts.add_shortcut(self, self.segment_button, shortcuts.SEGMENT),
            shortcuts.add_shortcut(self, self.cancel_button, shortcuts.CANCEL_SEGMENT),
        ]

    # ------------------------------------------------------------- image layers
    def _on_layer_removed(self, layer: Any) -> None:
        job = self._job
        if job is not None and not job.dropped and unwrap_proxy(layer) is unwrap_proxy(job.target.source):
            self._drop(
                job,
                f"The image layer {job.target.source.name!r} was deleted while it was being "
                "segmented; the segmentation was cancelled and no layer was changed.",
            )

    def _drop(self, job: _RunningJob, message: str) -> None:
        """Stop ``job`` and show no result of it; tell the user why (unless the widget was closed)."""
        job.dropped = message
        if self._runner.closed:
            return
        if self._job is job:
            self._runner.cancel()
        show_warning(message)
        self.status_label.setText(message)

    def _refresh_images(self, *_: Any) -> None:
        """List the viewer's image layers, keeping the chosen one if it is still there."""
        chosen = unwrap_proxy(self.image_layer) if self.image_combo.count() else None
        images = [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]
        if chosen is None or all(unwrap_proxy(layer) is not chosen for layer in images):
            active = self.viewer.layers.selection.active
            chosen = unwrap_proxy(active) if isinstance(active, napari.layers.Image) else None
            if chosen is None and images:
                chosen = unwrap_proxy(images[-1])
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in images:
            self.image_combo.addItem(layer.name, layer)
            self.image_combo.setItemData(
                self.image_combo.count() - 1, _describe_layer(layer), Qt.ItemDataRole.ToolTipRole
            )
            if unwrap_proxy(layer) is chosen:
                self.image_combo.setCurrentIndex(self.image_combo.count() - 1)
        self.image_combo.blockSignals(False)
        self._update_state()

    @property
    def image_layer(self) -> napari.layers.Image | None:
        """The image layer chosen for segmentation."""
        return self.image_combo.currentData()

    @image_layer.setter
    def image_layer(self, layer: napari.layers.Image) -> None:
        for row in range(self.image_combo.count()):
            if unwrap_proxy(self.image_combo.itemData(row)) is unwrap_proxy(layer):
                self.image_combo.setCurrentIndex(row)
                return
        raise ValueError(f"{layer!r} is not an image layer of this viewer")

    # -------------------------------------------------------------------- models
    def _load_first_shipped_model(self) -> None:
        if self._shipped:
            self._load(self._shipped[0].key)

    def load_model_file(self, path: str | Path) -> bool:
        """Use the model in file ``path``; on failure show why and keep the current model.

        Returns
        -------
        bool
            True if the model was loaded.
        """
        return self._load(str(path), load_model)

    def _load(self, source: str, loader: Any = load_named_model) -> bool:
        try:
            model = loader(source)
        except UserError as exc:  # a missing, unreadable or invalid model file, an unknown name
            show_error(f"Could not load the model: {exc}")
            self._on_model_changed(self.session.model)
            return False
        self.session.set_model(model, source)
        return True

    def _on_model_activated(self, row: int) -> None:
        source = self.model_combo.itemData(row)
        if source == _LOAD_FILE:
            path, _ = QFileDialog.getOpenFileName(
                self,
                "Load a napari-unet model",
                "",
                "napari-unet models (*.unet.safetensors *.zip);;bioimage.io packages (*.zip);;All files (*)",
            )
            if path:
                self.load_model_file(path)
            else:
                self._on_model_changed(self.session.model)
        elif source == self.session.source:
            return
        elif source == self.session.previous_source and self.session.can_revert:
            self.session.revert()
        else:
            self._load(source)

    def _on_model_changed(self, model: SegmentationModel | None = None) -> None:
        """Show the session's model in the chooser and the info line."""
        model = self.session.model
        source = self.session.source
        combo = self.model_combo
        combo.blockSignals(True)
        if combo.count() == 0:
            for shipped in self._shipped:
                combo.addItem(shipped.title, shipped.key)
                combo.setItemData(combo.count() - 1, literal_tip(shipped.summary), Qt.ItemDataRole.ToolTipRole)
            combo.addItem("Load model file...", _LOAD_FILE)
            combo.setItemData(
                combo.count() - 1,
                "Choose a napari-unet model file (.unet.safetensors) or a bioimage.io package (.zip) exported by napari-unet.",
                Qt.ItemDataRole.ToolTipRole,
            )
        self._list_user_models()
        self._forget_unloadable_models()
        row = combo.findData(source) if model is not None else -1
        if model is not None and row < 0:
            path = Path(source)
            text = f"{model.description.name} ({path.name})" if path.is_file() else model.description.name
            row = combo.count() - 1
            combo.insertItem(row, text, source)
            combo.setItemData(row, literal_tip(source), Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(row)
        combo.blockSignals(False)
        self._update_remove_button()
        if model is None:
            self.model_info.setText("No model chosen.")
            self.seed_spin.setSpecialValueText("model")
        else:
            desc = model.description
            channels = desc.config.in_channels
            self.model_info.setText(
                f"{channels} channel{'s' if channels > 1 else ''}; classes: {', '.join(desc.class_names)}"
            )
            own = desc.instance_rule.seed_threshold
            self.seed_spin.setSpecialValueText(
                f"model ({own:.2f})" if own is not None else "model (most probable class)"
            )
            seeds = "+".join(desc.class_names[c] for c in desc.instance_rule.seed_classes) or "interior"
            self.seed_spin.setPrefix(f"{seeds} > ")
            can_separate = desc.instance_rule.method != "none"
            item = self.output_combo.model().item(0)
            item.setEnabled(can_separate)
            if not can_separate and self.output_combo.currentData() == "instances":
                self.output_combo.setCurrentIndex(1)
        self._update_state()

    def _list_user_models(self) -> None:
        """Put the saved fine-tuned models (the user's folder) after the shipped ones, newest first."""
        combo = self.model_combo
        for row in reversed(range(combo.count())):
            if combo.itemData(row) in self._user_paths:
                combo.removeItem(row)
        saved = user_models()
        self._user_paths = {str(m.path) for m in saved}
        for i, model in enumerate(saved):
            row = len(self._shipped) + i
            combo.insertItem(row, f"{model.title} (saved {model.saved[:16].replace('T', ' ')})", str(model.path))
            combo.setItemData(row, literal_tip(f"{model.summary}\n{model.path}"), Qt.ItemDataRole.ToolTipRole)

    def _update_remove_button(self, *_: Any) -> None:
        removable = self.model_combo.currentData() in self._user_paths
        self.remove_model_button.setEnabled(removable)
        self.remove_model_button.setToolTip(
            "Delete the chosen saved fine-tuned model from your models folder (after asking)."
            if removable
            else "Only your saved fine-tuned models can be removed; shipped models and model files stay."
        )

    def remove_saved_model(self, path: str) -> bool:
        """Delete saved model ``path`` from the user's folder after the user confirms; True if removed."""
        if path not in self._user_paths:
            return False
        answer = QMessageBox.question(
            self,
            "Remove the saved model?",
            f"Delete {Path(path).name} from your models folder? This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            remove_user_model(path)
        except UserError as exc:
            show_error(f"Could not remove the model: {exc}")
            return False
        in_use = path == self.session.source
        self.status_label.setText(
            f"Removed {Path(path).name}." + (" It stays in use until you choose another model." if in_use else "")
        )
        self._on_model_changed(self.session.model)
        return True

    def _on_remove_clicked(self) -> None:
        path = self.model_combo.currentData()
        if isinstance(path, str):
            self.remove_saved_model(path)

    def _forget_unloadable_models(self) -> None:
        """Drop chooser entries of in-memory models that are neither current nor previous."""
        keep = {self.session.source, self.session.previous_source, _LOAD_FILE}
        keep.update(m.key for m in self._shipped)
        combo = self.model_combo
        for row in reversed(range(combo.count())):
            source = combo.itemData(row)
            if source not in keep and not Path(source).is_file():
                combo.removeItem(row)

    # ------------------------------------------------------------------ running
    def _layout_of(self, layer: Any, model: SegmentationModel) -> ImageLayout:
        shape = tuple(_full_resolution(layer).shape)
        axis = self.channel_spin.value()
        return infer_layout(
            shape,
            in_channels=model.config.in_channels,
            channel_axis=None if axis < 0 or layer.rgb else axis,
            rgb=bool(layer.rgb),
        )

    def _update_state(self, *_: Any) -> None:
        layer = self.image_layer
        model = self.session.model
        is_stack = False
        if layer is not None:
            data_ndim = layer.ndim + (1 if layer.rgb else 0)
            self.channel_spin.setMaximum(max(0, data_ndim - 1))
            try:
                is_stack = bool(self._layout_of(layer, model).stack_axes) if model else layer.ndim > 2
            except ImageLayoutError:
                is_stack = layer.ndim > 2
        for button in (self.whole_stack, self.current_plane):
            button.setEnabled(is_stack)
        if not is_stack:
            self.current_plane.setToolTip("The image is a single plane; there is no stack to choose from.")
        else:
            self.current_plane.setToolTip(
                "Segment only the plane shown in the viewer; the other planes of the result are left as they are."
            )
        if self.is_running:
            reason = "A segmentation is running; wait for it or press Cancel."
        elif layer is None:
            reason = "Add or open an image layer first."
        elif model is None:
            reason = "Choose a model first."
        else:
            reason = self._busy_reason(layer)
        self.segment_button.setEnabled(not reason)
        shortcuts.set_tip(self.segment_button, reason or f"Segment {layer.name!r} with {model.description.name!r}.")  # type: ignore[union-attr]
        self.cancel_button.setEnabled(self.is_running)
        if self.is_running:
            cancel_tip = "Stop the running segmentation; the previous result is kept."
        else:
            cancel_tip = "Nothing to cancel: no segmentation is running."
        shortcuts.set_tip(self.cancel_button, cancel_tip)
        stitching = is_stack and self.output_combo.currentData() == "instances" and self.whole_stack.isChecked()
        self.stitch_spin.setEnabled(stitching)
        self.stitch_spin.setToolTip(
            _STITCH_TIP if stitching else "Not available: linking needs Output 'Objects', a stack and 'Whole stack'."
        )
        seeded = model is not None and model.description.instance_rule.method == "seeded_watershed"
        seeding = seeded and self.output_combo.currentData() == "instances"
        self.seed_spin.setEnabled(seeding)
        if seeding:
            self.seed_spin.setToolTip(_SEEDS_TIP)
        elif seeded:
            self.seed_spin.setToolTip("Not used: seeds separate objects, and Output is not 'Objects'.")
        else:
            self.seed_spin.setToolTip("Not used: this model does not grow its objects from seeds.")
        labels_output = self.output_combo.currentData() != "probabilities"
        self.probabilities_check.setEnabled(labels_output)
        self.outline_check.setEnabled(labels_output)
        if not labels_output:
            self.probabilities_check.setToolTip(
                "Output 'Probabilities' already makes the probability layers (and no Labels layer)."
            )
            self.outline_check.setToolTip("Output 'Probabilities' makes no Labels layer to outline.")
        else:
            self.probabilities_check.setToolTip(_PROBABILITIES_TIP)
            self.outline_check.setToolTip(_OUTLINE_TIP)

    def _busy_reason(self, layer: Any) -> str:
        """Why ``layer`` cannot be segmented now (Fine-tune trains on one of its result layers), or ``""``."""
        for labels in self.session.training_layers():
            source = self.session.results.origin_of(self.viewer, labels)
            if source is not None and unwrap_proxy(source) is unwrap_proxy(layer):
                return (
                    f"Fine-tune is training on {labels.name!r}; Segment {layer.name!r} again when training "
                    "has ended (or press Stop in Fine-tune)."
                )
        return ""

    def _on_edits_kept(self, kept: Any, new: Any) -> None:
        """Say that the result went to a new layer because the old one holds the user's edits."""
        if self._showing:
            message = (
                f"{kept.name!r} holds your corrections, so it was kept as it is and the new result is in "
                f"{new.name!r}. Both can be trained on in Fine-tune."
            )
            show_info(message)
            self._kept_note = message

    def _show_outlines(self, *_: Any) -> None:
        """Apply "Show outlines" to the Labels result of the chosen image at once."""
        layer = self.image_layer
        if layer is not None:
            for labels in self.session.results.find(self.viewer, layer, "labels"):
                set_contour(labels, self.outline_check.isChecked())

    def segment(self) -> GeneratorWorker | None:
        """Start segmenting the chosen image layer; returns the worker (None if refused).

        The result goes to the layers of the image layer chosen now, whatever
        is chosen when the job ends.
        """
        layer, model = self.image_layer, self.session.model
        if self.is_running:
            show_info("A segmentation is running; wait for it to finish or press Cancel, then segment again.")
            return None
        if layer is None or model is None or self._runner.closed:
            return None
        busy = self._busy_reason(layer)
        if busy:
            show_info(busy)
            return None
        try:
            layout = self._layout_of(layer, model)
        except UserError as exc:  # the image does not fit the model (channels, axes)
            show_error(f"Cannot segment {layer.name!r}: {exc}")
            return None
        own_rule = model.description.instance_rule
        model = self._with_chosen_seeds(model)
        seeds = _seeds_note(model.description.instance_rule, own_rule)
        keep = self.probabilities_check.isChecked() and self.probabilities_check.isEnabled()
        output_kind = self.output_combo.currentData()
        if is_large(layer, layout=layout, config=model.config, output_kind=output_kind, keep_probabilities=keep):
            return self._segment_large(layer, model, layout, seeds=seeds)
        image = _full_resolution(layer)
        channel_axis = layout.channel_axis if not layer.rgb else None
        plane = None
        if self.current_plane.isChecked() and layout.stack_axes:
            plane = shown_plane(self.viewer, layer, layout)
            key: list[Any] = [slice(None)] * len(layout.shape)
            for axis, index in zip(layout.stack_axes, plane):
                key[axis] = index
            image = image[tuple(key)]
            if channel_axis is not None:
                channel_axis -= sum(1 for axis in layout.stack_axes if axis < channel_axis)
        options = {
            "output_kind": self.output_combo.currentData(),
            "channel_axis": channel_axis,
            "rgb": bool(layer.rgb),
            "options": self._inference_options(),
            "keep_probabilities": self.probabilities_check.isChecked() and self.probabilities_check.isEnabled(),
        }
        if plane is None and layout.stack_axes and self.stitch_spin.isEnabled() and self.stitch_spin.value() > 0:
            options["stitch_threshold"] = self.stitch_spin.value()
        where = f" (plane {', '.join(map(str, plane))})" if plane else ""
        job = _RunningJob(make_target(layer, layout, plane), seeds=seeds)
        if self.channel_spin.value() < 0 and not layer.rgb:
            job.notice = channel_notice(
                layout, in_channels=model.config.in_channels, layer_name=layer.name, model_name=model.description.name
            )
            if job.notice:
                show_info(job.notice)
        return self._start(
            job,
            partial(segment_job, image, model, **options),
            partial(self._on_returned, job),
            status=f"Segmenting {layer.name}{where}...",
            desc=f"U-Net: {layer.name}{where}",
        )

    def _with_chosen_seeds(self, model: SegmentationModel) -> SegmentationModel:
        """``model`` with the seed threshold of the Seeds field (the same network), or itself for "model"."""
        if not self.seed_spin.isEnabled() or self.seed_spin.value() <= 0:
            return model
        rule = model.description.instance_rule.with_seed_threshold(round(self.seed_spin.value(), 2))
        return model.with_instance_rule(rule)

    def _inference_options(self) -> InferenceOptions:
        """The device, tile, batch and precision chosen, with the session's engine cache."""
        return InferenceOptions(
            device=self.device_combo.currentData(),
            tile_size=self.tile_spin.value() or None,
            batch_size=self.batch_spin.value() or None,
            amp=self.amp_check.isChecked(),
            diameter=self.diameter_field.setting(),
            engine_cache=self.session.engines,
        )

    def _start(self, job: _RunningJob, make_job: Any, done: Any, *, status: str, desc: str) -> GeneratorWorker | None:
        """Run the job ``make_job`` makes with the runner; ``done`` gets its result."""
        handlers = JobHandlers(
            done=done,
            failed=partial(self._on_failed, job),
            cancelled=partial(self._on_cancelled, job),
            yielded=partial(self._on_progress, job),
            ended=partial(self._on_ended, job),
        )
        worker = self._runner.start(make_job, handlers, desc=desc)
        if worker is None:
            return None
        self._job = job
        self.status_label.setText(status)
        self._update_state()
        return worker

    def _segment_large(
        self, layer: Any, model: SegmentationModel, layout: ImageLayout, *, seeds: str = ""
    ) -> GeneratorWorker | None:
        """Segment a layer too large to load, block by block into a zarr folder (whole stack)."""
        if self.stitch_spin.isEnabled() and self.stitch_spin.value() > 0:
            show_info("Link planes is not applied to images segmented block by block: each plane keeps its own IDs.")
        output = self.output_combo.currentData()
        path = result_path(layer, output)
        target = make_target(layer, layout)
        options = {
            "output_kind": output,
            "channel_axis": layout.channel_axis if not layer.rgb else None,
            "rgb": bool(layer.rgb),
            "options": self._inference_options(),
            "scale": target.scale,
        }
        job = _RunningJob(target, seeds=seeds)
        names = list(model.description.class_names)  # of the model used, whatever is chosen when it ends
        return self._start(
            job,
            partial(segment_to_zarr_job, _full_resolution(layer), model, path, **options),
            partial(self._on_large_returned, job, class_names=names),
            status=f"Segmenting {layer.name} block by block into {path}...",
            desc=f"U-Net: {layer.name} (block by block)",
        )

    def _on_large_returned(self, job: _RunningJob, result: BlockwiseResult, *, class_names: list[str]) -> None:
        if job.dropped:
            return
        if all(unwrap_proxy(layer) is not unwrap_proxy(job.target.source) for layer in self.viewer.layers):
            self._drop(
                job,
                f"The image layer {job.target.source.name!r} was deleted; its segmentation is in "
                f"{result.path} but was not added.",
            )
            return
        layers = show_lazy_result(self.viewer, self.session.results, job.target, result, class_names)
        self._show_scale(result.object_scale, layers)
        if result.output != "probabilities":
            set_contour(layers[0], self.outline_check.isChecked())
        found = f"{result.n_objects} objects, " if result.output == "instances" else ""
        self.status_label.setText(
            f"Done: {found}{job.seeds}{result.seconds:.1f} s on {result.device}; saved in {result.path}."
        )

    def cancel(self) -> None:
        """Stop the running job at its next step; its partial result is dropped."""
        if self._runner.cancel():
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling...")

    def _on_progress(self, job: _RunningJob, report: Progress) -> None:
        if job.dropped:
            return
        if report.message and self._job is job:
            self.status_label.setText(f"Segmenting {job.target.source.name}: {report.message}")
        if report.stage == Stage.NOTICE:
            show_info(report.message)
            if "object_scale" not in report.data:  # the scale's own note has its line; a model-fit notice stays
                job.notice = f"{job.notice} {report.message}" if job.notice else report.message

    def _on_returned(self, job: _RunningJob, result: SegmentationResult) -> None:
        if self._runner.closed or job.dropped:
            return  # the widget (or the viewer) was closed, or the image layer deleted: show nothing
        if all(unwrap_proxy(layer) is not unwrap_proxy(job.target.source) for layer in self.viewer.layers):
            # deleted just as the job ended (its result was already on its way)
            self._drop(job, f"The image layer {job.target.source.name!r} was deleted; its segmentation was not added.")
            return
        self._showing, self._kept_note = True, ""
        try:
            shown = self.session.results.show(self.viewer, job.target, result, outlines=self.outline_check.isChecked())
        finally:
            self._showing = False
        self._show_scale(result.object_scale, shown)
        found = f"{result.n_objects} objects, " if result.output == "instances" else ""
        note = f" Note: {job.notice}" if job.notice else ""
        note += f" {self._kept_note}" if self._kept_note else ""
        on = result.device if result.precision == "float32" else f"{result.device} ({result.precision})"
        self.status_label.setText(f"Done: {found}{job.seeds}{result.seconds:.1f} s on {on}.{note}")

    def _show_scale_row(self, text: str) -> None:
        """Show ``text`` under Object size; the row is hidden while there is nothing to say."""
        self.scale_label.setText(text)
        self.scale_label.setVisible(bool(text))
        self._scale_row_label.setVisible(bool(text))

    def _show_scale(self, scale: ObjectScale | None, layers: list[Any]) -> None:
        """Show the object size a run used, and record it on its result layers (Fine-tune reads it)."""
        self._show_scale_row("" if scale is None else f"Last run: {scale.note}.")
        if scale is None or scale.diameter is None:
            return
        for layer in layers:
            mark = unwrap_proxy(layer).metadata.get(RESULT_KEY)
            if isinstance(mark, dict):
                mark["object_diameter_px"] = scale.diameter

    def _on_failed(self, job: _RunningJob, error: UserError) -> None:
        if not job.dropped:
            show_error(f"Cannot segment {job.target.source.name!r}: {error}")
            self.status_label.setText(f"Failed: {error}")

    def _on_cancelled(self, job: _RunningJob) -> None:
        if not job.dropped:
            self.status_label.setText("Cancelled; the previous result is unchanged.")

    def _on_ended(self, job: _RunningJob) -> None:
        if self._job is job:
            self._job = None
        if not self._runner.closed:
            self._update_state()
            # in a dock shared with Fine-tune the Done / Failed line may sit below the fold: bring it
            # into view (after the pending layout update: the line just changed height)
            QTimer.singleShot(0, lambda: self._runner.closed or self._scroll.ensureWidgetVisible(self.status_label))


def _seeds_note(used: InstanceRule, own: InstanceRule, /) -> str:
    """Part of the Done line when the Seeds field replaced the model's seed threshold (``""`` otherwise)."""
    if used == own or used.seed_threshold is None:
        return ""
    model = f"{own.seed_threshold:.2f}" if own.seed_threshold is not None else "the most probable class"
    return f"seeds above {used.seed_threshold:.2f} (set in Seeds; the model's own: {model}), "


def _row_label(text: str, width: int) -> QLabel:
    label = QLabel(text)
    label.setMinimumWidth(width)
    return label


def _full_resolution(layer: Any) -> Any:
    """The data of an image layer at full resolution (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


def _describe_layer(layer: Any) -> str:
    shape = _full_resolution(layer).shape
    kind = "RGB " if layer.rgb else ""
    return f"{kind}image, shape {tuple(int(s) for s in shape)}, {layer.dtype}"
