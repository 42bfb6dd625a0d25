"""The Export widget: result layers out as TIFF files that Fiji opens.

Thin: it turns layers into a list of :class:`~napari_unet.core.io.export.ExportItem`
(on the GUI thread, copying in-memory data; lazy zarr-backed results are read
in the worker), refuses to replace existing files
unless told to, and runs :func:`~napari_unet.core.io.export.export_job` with
the widget's :class:`~napari_unet._widgets.forms.job_runner.JobRunner` (worker
thread, progress, Cancel, close guard). Every file is written atomically, so Cancel (which
stops between files) and errors never leave a partial file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
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
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet._widgets.forms.job_runner import JobHandlers, JobRunner, RunsJobs
from napari_unet._widgets.forms.lifetime import connect_for_life
from napari_unet._widgets.forms.name_combo import fit_names
from napari_unet._widgets.forms.notify import show_error, show_info, show_warning, warn_install_conflict
from napari_unet._widgets.forms.plain_text import literal_tip, plain_label
from napari_unet._widgets.forms.scrolling import scrolling_content
from napari_unet._widgets.layers.layer_events import follow_layers
from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet._widgets.layers.results import RESULT_KEY
from napari_unet._widgets.layers.session import session_for
from napari_unet._widgets.layers.warm_up import start_warm_up
from napari_unet._writer import DEFAULT_UNIT, label_axes, spatial_calibration
from napari_unet.core import Progress
from napari_unet.core.errors import UserError
from napari_unet.core.io.export import ExportedFile, ExportItem, class_mask, existing_outputs, export_job, file_stem

log = logging.getLogger(__name__)

#: Item data of the "All result layers" entry of the layer chooser.
ALL_RESULTS = "\x00all-results"
#: File name suffix of each kind of file.
_SUFFIXES = {"instances": "_labels.tif", "classes": "_classes.tif", "probabilities": "_probabilities.tif"}
#: Files made from the objects (beside ``<image>_labels.tif``).
_OBJECT_SUFFIXES = {"rois": "_rois.zip", "measurements": "_measurements.csv"}
#: How napari's Save dialog names our writer (the manifest's display_name, then the writer's).
SAVE_FILTER = "U-Net ImageJ TIFF for Fiji (smallest integer type)"
SAVE_HINT = (
    f"File > Save Layers... writes the same labels TIFF when you choose '{SAVE_FILTER}' as the file type: "
    "napari offers the writers in the order the plugins were found, and its own 'labels' TIFF keeps the "
    "layer's integer type and no pixel size."
)


@dataclass
class _Entry:
    """What can be exported for one image (or one plain Labels layer)."""

    stem: str
    labels: Any = None
    output: str | None = None  # "instances", "classes", or None: not made by napari-unet
    probabilities: list[Any] = field(default_factory=list)
    image: Any = None  # the segmented image layer, for mean intensities

    def has(self, what: str) -> bool:
        if what == "instances":
            return self.labels is not None and self.output in ("instances", None)
        if what == "classes":
            return (self.labels is not None and self.output == "classes") or len(self.probabilities) >= 2
        return bool(self.probabilities)


class ExportWidget(RunsJobs, QWidget):
    """Export labels, class masks and probabilities as ImageJ TIFF files.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it, possibly as a proxy).

    Attributes
    ----------
    worker : napari.qt.threading.GeneratorWorker or None
        The worker of the last export started (still set after it finished).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        start_warm_up()  # first-use imports off the GUI thread, before the first result arrives
        warn_install_conflict()  # another napari-unet distribution in this environment: say what to do
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._written = 0
        self._build()
        self._runner = JobRunner(self, status=self.status_label)  # closing the dock or the viewer stops the export
        follow_layers(self, self.viewer, self._refresh_layers)
        connect_for_life(self, self.session.results.changed, self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.layer_combo = fit_names(QComboBox())
        self.layer_combo.setToolTip("One Labels layer, or every result layer that Segment made.")
        self.instances_radio = QRadioButton("Objects (instance labels)")
        self.classes_radio = QRadioButton("Classes (class mask)")
        self.instances_radio.setChecked(True)
        self._what_group = QButtonGroup(self)
        self._what_group.addButton(self.instances_radio)
        self._what_group.addButton(self.classes_radio)
        what = QVBoxLayout()
        what.setContentsMargins(0, 0, 0, 0)
        what.addWidget(self.instances_radio)
        what.addWidget(self.classes_radio)
        self.probabilities_check = QCheckBox("Probabilities (float32, classes as channels)")
        self.rois_check = QCheckBox("ROI Manager .zip of the objects (Fiji)")
        self.measurements_check = QCheckBox("Measurements of the objects (.csv)")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("choose a folder")
        self.folder_edit.setToolTip("The folder the files are written to.")
        self.browse_button = QPushButton("Browse...")
        self.browse_button.setToolTip("Choose the folder with a file dialog.")
        folder = QHBoxLayout()
        folder.setContentsMargins(0, 0, 0, 0)
        folder.addWidget(self.folder_edit, stretch=1)
        folder.addWidget(self.browse_button)
        self.overwrite_check = QCheckBox("Overwrite existing files")
        self.overwrite_check.setToolTip("Off: an export that would replace a file is refused, naming the files.")
        self.files_label = plain_label()  # layer names
        self.files_label.setWordWrap(True)
        self.files_label.setToolTip("The files an export writes.")
        self.export_button = QPushButton("Export")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the file being written; no partial file is left.")
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button, stretch=2)
        buttons.addWidget(self.cancel_button, stretch=1)
        self.status_label = plain_label()
        self.status_label.setWordWrap(True)
        self.status_label.setToolTip("What the last export did.")
        self.save_hint = plain_label(SAVE_HINT)
        self.save_hint.setWordWrap(True)
        self.save_hint.setEnabled(False)  # greyed: a note, not a control

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Layers", self.layer_combo)
        form.addRow("Labels", what)
        form.addRow("", self.probabilities_check)
        form.addRow("", self.rois_check)
        form.addRow("", self.measurements_check)
        form.addRow("Folder", folder)
        form.addRow("", self.overwrite_check)
        form.addRow("Files", self.files_label)
        content = QWidget()
        self._scroll = scrolling_content(self, content, grows=False)
        layout = QVBoxLayout(content)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.save_hint)
        layout.addStretch()

        self.layer_combo.currentIndexChanged.connect(self._update_state)
        self._what_group.buttonToggled.connect(self._update_state)
        self.probabilities_check.toggled.connect(self._update_state)
        self.rois_check.toggled.connect(self._update_state)
        self.measurements_check.toggled.connect(self._update_state)
        self.folder_edit.textChanged.connect(self._update_state)
        self.browse_button.clicked.connect(self._browse)
        self.export_button.clicked.connect(self.export)
        self.cancel_button.clicked.connect(self.cancel)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, *_: Any) -> None:
        """List "All result layers" and every Labels layer, keeping the choice if it is still there."""
        chosen = self.layer_combo.currentData()
        chosen = chosen if chosen == ALL_RESULTS else unwrap_proxy(chosen)
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItem("All result layers", ALL_RESULTS)
        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Labels):
                self.layer_combo.addItem(layer.name, layer)
                if unwrap_proxy(layer) is chosen:
                    self.layer_combo.setCurrentIndex(self.layer_combo.count() - 1)
        self.layer_combo.blockSignals(False)
        self._update_state()

    def choose_layer(self, layer: Any) -> None:
        """Export only ``layer`` (a Labels layer of the viewer)."""
        for row in range(1, self.layer_combo.count()):
            if unwrap_proxy(self.layer_combo.itemData(row)) is unwrap_proxy(layer):
                self.layer_combo.setCurrentIndex(row)
                return
        raise ValueError(f"{layer!r} is not a Labels layer of this viewer")

    def _entries(self) -> list[_Entry]:
        chosen = self.layer_combo.currentData()
        results = self.session.results
        if chosen is None:
            return []
        if chosen == ALL_RESULTS:
            return [self._entry_of(source) for source in results.sources(self.viewer)]
        source = results.source_of(self.viewer, chosen)
        if source is not None:
            return [self._entry_of(source)]
        mark = unwrap_proxy(chosen).metadata.get(RESULT_KEY) or {}
        return [_Entry(file_stem(str(mark.get("source") or chosen.name)), chosen, mark.get("output"))]

    def _entry_of(self, source: Any) -> _Entry:
        labels = self.session.results.find(self.viewer, source, "labels")
        probabilities = self.session.results.find(self.viewer, source, "probabilities")
        output = (unwrap_proxy(labels[0]).metadata.get(RESULT_KEY) or {}).get("output") if labels else None
        entry = _Entry(file_stem(source.name), labels[0] if labels else None, output or "instances", probabilities)
        entry.image = source
        return entry

    # ------------------------------------------------------------------ state
    def _what(self) -> str:
        return "instances" if self.instances_radio.isChecked() else "classes"

    def _update_state(self, *_: Any) -> None:
        entries = self._entries()
        can = {what: any(e.has(what) for e in entries) for what in ("instances", "classes", "probabilities")}
        self.instances_radio.setEnabled(can["instances"])
        self.instances_radio.setToolTip(
            "Write the Labels layer as it is: one ID per object."
            if can["instances"]
            else "Not available: this layer holds classes, not objects. Segment with Output 'Objects' for them."
        )
        self.classes_radio.setEnabled(can["classes"])
        self.classes_radio.setToolTip(
            "Write the most likely class of every pixel (0 = background)."
            if can["classes"]
            else "Not available: no class mask for this layer. Segment with Output 'Classes' or 'Probabilities' "
            "to get one."
        )
        if not can[self._what()] and can["instances" if self._what() == "classes" else "classes"]:
            (self.classes_radio if self._what() == "instances" else self.instances_radio).setChecked(True)
            return  # the toggle calls this again
        self.probabilities_check.setEnabled(can["probabilities"])
        self.probabilities_check.setToolTip(
            "Also write the class probabilities as a float32 file."
            if can["probabilities"]
            else "Not available: there are no probability layers. Segment with Output 'Probabilities' first."
        )
        self._update_object_checks(can["instances"] and self._what() == "instances")
        folder = self.folder_edit.text().strip()
        try:
            names = [item.path.name for item in self._plan(Path(folder or "."))] if entries else []
            unusable = ""
        except UserError as exc:  # e.g. a Labels layer with more dimensions than a TIFF can hold
            names, unusable = [], f"Cannot export: {exc}."
        self.files_label.setText(", ".join(names) if names else "nothing to export")
        if self.is_running:
            reason = "An export is running; wait for it or press Cancel."
        elif unusable:
            reason = unusable
        elif not entries:
            reason = "There are no result layers; segment an image or choose a Labels layer."
        elif not names:
            reason = "Nothing of the chosen kind to export."
        elif not folder:
            reason = "Choose a folder first."
        else:
            reason = ""
        self.export_button.setEnabled(not reason)
        self.export_button.setToolTip(literal_tip(reason or f"Write {len(names)} file(s) to {folder}."))
        self.cancel_button.setEnabled(self.is_running and not self._runner.cancelling)
        self.cancel_button.setToolTip(
            "Stop after the file being written; no partial file is left."
            if self.is_running
            else "Nothing to cancel: no export is running."
        )

    def _update_object_checks(self, enabled: bool) -> None:
        self.rois_check.setEnabled(enabled)
        self.measurements_check.setEnabled(enabled)
        why = "" if enabled else "Not available: choose Objects (instance labels) above; classes are not objects. "
        self.rois_check.setToolTip(
            why + "Also write <image>_rois.zip: one polygon per object and plane, for Fiji's ROI Manager "
            "(drag the file onto the image in Fiji)."
        )
        self.measurements_check.setToolTip(
            why + "Also write <image>_measurements.csv: area (volume for Z stacks), centroid and mean intensity "
            "of every object, in the layer's units where its scale is set."
        )

    # ------------------------------------------------------------------ plan
    def _plan(self, folder: Path, *, copy: bool = False) -> list[ExportItem]:
        """The files to write for the current choices.

        With ``copy``, each item gets its data as a function the export
        worker calls: in-memory layers are copied now (painting during the
        export does not change what is written; a copy is a memory copy),
        lazy zarr-backed layers are only read in the worker, where reading a
        whole-slide result cannot freeze the GUI.
        """
        what = self._what()
        items: list[ExportItem] = []
        for entry in self._entries():
            if entry.has(what):
                if entry.labels is not None and entry.output in (what, None):
                    data = _deferred(np.asarray, _snapshot(entry.labels.data)) if copy else None
                    items.append(_item(folder / f"{entry.stem}{_SUFFIXES[what]}", entry.labels, data, "labels"))
                    if what == "instances":
                        items += self._object_items(folder, entry, data)
                else:
                    data = _deferred(class_mask, [_snapshot(p.data) for p in entry.probabilities]) if copy else None
                    items.append(
                        _item(folder / f"{entry.stem}{_SUFFIXES[what]}", entry.probabilities[0], data, "labels")
                    )
            if self.probabilities_check.isChecked() and entry.has("probabilities"):
                data = _deferred(_stack_classes, [_snapshot(p.data) for p in entry.probabilities]) if copy else None
                items.append(
                    _item(
                        folder / f"{entry.stem}{_SUFFIXES['probabilities']}",
                        entry.probabilities[0],
                        data,
                        "probabilities",
                    )
                )
        return items

    def _object_items(self, folder: Path, entry: _Entry, data: Any) -> list[ExportItem]:
        """The ROI zip and measurements table of ``entry``'s objects, when their boxes are ticked."""
        items = []
        for kind, check in (("rois", self.rois_check), ("measurements", self.measurements_check)):
            if check.isChecked() and check.isEnabled():
                item = _item(folder / f"{entry.stem}{_OBJECT_SUFFIXES[kind]}", entry.labels, data, kind)
                if kind == "measurements" and data is not None:
                    item = replace(item, intensity=_intensity_of(entry))
                items.append(item)
        return items

    # ------------------------------------------------------------------ running
    def export(self) -> GeneratorWorker | None:
        """Start writing the files; returns the worker, or None if the export was refused.

        Refused (with a message, nothing written) when the folder is missing,
        two files would get the same name, or files exist and "Overwrite
        existing files" is off.
        """
        if self.is_running or self._runner.closed:
            return None
        text = self.folder_edit.text().strip()
        folder = Path(text).expanduser()
        if not text or not folder.is_dir():
            return self._refuse(f"The folder {text!r} does not exist; choose an existing folder.")
        try:
            items = self._plan(folder, copy=True)
        except UserError as exc:
            return self._refuse(f"Cannot export: {exc}.")
        if not items:
            return self._refuse("Nothing to export: choose a layer and what to write.")
        names = [item.path.name for item in items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return self._refuse(f"Several images would be written to {', '.join(twice)}; rename their layers.")
        overwrite = self.overwrite_check.isChecked()
        existing = existing_outputs(items)
        if existing and not overwrite:
            return self._refuse(
                f"Nothing exported: {', '.join(p.name for p in existing)} already exist in {folder}. "
                "Tick 'Overwrite existing files' to replace them, or choose another folder."
            )
        handlers = JobHandlers(
            done=partial(self._on_returned, folder),
            failed=self._on_failed,
            cancelled=self._on_cancelled,
            yielded=self._on_progress,
            ended=self._on_finished,
        )
        self._written = 0
        worker = self._runner.start(
            partial(export_job, items, overwrite=overwrite),
            handlers,
            desc="Exporting TIFF files",
            total=len(items),
            fraction=lambda report: report.done / len(items),
        )
        self.status_label.setText(f"Exporting {len(items)} file(s)...")
        self._update_state()
        return worker

    def cancel(self) -> None:
        """Stop after the file being written (it is completed; the rest are not started)."""
        if self._runner.cancel():
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling...")

    def _refuse(self, message: str) -> None:
        show_error(message)
        self.status_label.setText(message)
        return None

    def _on_progress(self, report: Progress) -> None:
        self._written = max(self._written, report.done)
        if not self._runner.cancelling:
            self.status_label.setText(f"Exporting: {report.message}")

    def _on_returned(self, folder: Path, result: list[ExportedFile]) -> None:
        for exported in result:
            if exported.warning:
                show_warning(exported.warning)
        names = ", ".join(f.path.name for f in result)
        show_info(f"Exported {len(result)} file(s) to {folder}: {names}")
        # the dock is narrow: the folder's last part in the status, the whole path in its tooltip
        self.status_label.setText(f"Exported {len(result)} file(s): {names}, in {_short_folder(folder)}")
        self.status_label.setToolTip(literal_tip(f"Written to {folder}"))
        # in a dock shared with Segment the status may sit below the fold: bring it into view
        # (after the pending layout update: the status just changed height)
        QTimer.singleShot(0, lambda: self._runner.closed or self._scroll.ensureWidgetVisible(self.status_label))

    def _on_failed(self, error: UserError) -> None:
        message = f"Export failed after {self._written} file(s): {error}"
        show_error(message)
        self.status_label.setText(message)

    def _on_cancelled(self) -> None:
        self.status_label.setText(
            f"Cancelled: {self._written} file(s) were written completely; the others were not started."
        )

    def _on_finished(self) -> None:
        if not self._runner.closed:
            self._update_state()


def _short_folder(folder: Path) -> str:
    """``folder`` for a narrow status line: its last two parts after an ellipsis when it is long."""
    text = str(folder)
    if len(text) <= 30 or len(folder.parts) <= 3:
        return text
    return str(Path("…", *folder.parts[-2:]))


def _level0(data: Any) -> Any:
    """Full-resolution data of a (possibly multiscale) layer."""
    return data[0] if isinstance(data, (list, tuple)) else data


def _snapshot(data: Any) -> Any:
    """Full-resolution data to export: a copy of an in-memory array, a lazy array as it is."""
    level0 = _level0(data)
    return level0.copy() if isinstance(level0, np.ndarray) else level0


def _deferred(function: Any, data: Any) -> Any:
    """``function(data)``, to be called in the export worker."""
    return partial(function, data)


def _intensity_of(entry: _Entry) -> Any:
    """The image to measure mean intensities in (a function for the worker), or None when it does not fit."""
    image, labels = entry.image, entry.labels
    if image is None or labels is None:
        return None
    shape, wanted = tuple(_level0(image.data).shape), tuple(_level0(labels.data).shape)
    if shape != wanted and not (getattr(image, "rgb", False) and shape[:-1] == wanted):
        return None  # e.g. a multichannel layer segmented as a stack: no intensity column
    return _deferred(np.asarray, _snapshot(image.data))


def _stack_classes(probabilities: list[Any]) -> np.ndarray:
    """One float32 array with the classes on the axis before Y, X."""
    return np.stack([np.asarray(p, np.float32) for p in probabilities], axis=-3)


def _item(path: Path, layer: Any, data: Any, kind: str) -> ExportItem:
    """An export item with the geometry (axes, pixel size, unit) of ``layer``."""
    axes = label_axes(layer.ndim, axis_labels=getattr(layer, "axis_labels", None), units=getattr(layer, "units", None))
    scale, unit = spatial_calibration(tuple(layer.scale), getattr(layer, "units", None), axes)
    if kind == "probabilities":
        axes = axes[:-2] + "CYX"
    return ExportItem(
        path=path,
        data=data,
        kind=kind,
        axes=axes,
        scale=scale,  # type: ignore[arg-type]
        unit=unit or DEFAULT_UNIT,
    )
