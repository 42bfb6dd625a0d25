"""The *Export bioimage.io...* button: a model as a bioimage.io package, written in the background."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QWidget

from napari_unet._widgets.forms.job_runner import JobHandlers, JobRunner
from napari_unet._widgets.forms.notify import show_error
from napari_unet.core import SegmentationModel
from napari_unet.core.errors import UserError

TIP = (
    "Write the fine-tuned model (before fine-tuning: the model in use) as a bioimage.io package (.zip) that "
    "deepImageJ/Fiji, QuPath, ilastik and napari-unet itself read; needs napari-unet-toolkit[bioimageio]."
)


class BioimageioButton(QPushButton):
    """Exports the model ``model_to_export`` gives with the widget's job runner.

    Parameters
    ----------
    parent : QWidget
        The widget; dialogs open over it.
    runner : callable
        The widget's job runner, which runs the export (seconds: tracing,
        writing, checking) off the GUI thread.
    model_to_export : callable
        The model to export now, or None.
    status : QLabel
        Where the outcome is written.
    changed : callable
        Called when an export starts and ends (the widget updates its buttons).
    """

    def __init__(
        self,
        parent: QWidget,
        runner: Callable[[], JobRunner],
        model_to_export: Callable[[], SegmentationModel | None],
        status: QLabel,
        changed: Callable[[], None],
    ) -> None:
        super().__init__("Export bioimage.io...", parent)
        self._runner = runner
        self._model = model_to_export
        self._status = status
        self._changed = changed
        self.setToolTip(TIP)
        self.clicked.connect(self._on_clicked)

    def refresh(self, *, busy: bool) -> None:
        """Enable the button when there is a model and no job runs."""
        self.setEnabled(not busy and self._model() is not None)
        self.setToolTip(TIP if self.isEnabled() else "Nothing to export now: no model, or a job is running.")

    def export_to(self, path: str | Path) -> Any:
        """Export the model to ``path`` (``.zip`` added if missing) in the background; the worker, or None."""
        from napari_unet.core.network.bioimageio_export import export_bioimageio_job

        model = self._model()
        if model is None or self._runner().running:
            show_error("There is no model to export now, or a job is running; wait for it.")
            return None
        path = Path(path)
        if path.suffix.lower() != ".zip":
            path = path.with_name(path.name + ".zip")
        handlers = JobHandlers(done=self._on_done, failed=self._on_failed, ended=self._changed)
        self._status.setText(f"Exporting {model.description.name!r} as a bioimage.io package...")
        # the dialog asked before replacing a file; a copy, so training or Accept meanwhile changes nothing
        job = partial(export_bioimageio_job, model.copy(), path, overwrite=True)
        worker = self._runner().start(job, handlers, desc="Exporting a bioimage.io package", total=4)
        self._changed()
        return worker

    def _on_clicked(self) -> None:
        model = self._model()
        if model is None:
            return
        stem = re.sub(r"[^\w.-]+", "_", model.description.name).strip("_") or "model"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export a bioimage.io model package", f"{stem}.zip", "bioimage.io packages (*.zip);;All files (*)"
        )
        if path:
            self.export_to(path)

    def _on_done(self, written: Path) -> None:
        self._status.setText(f"Exported to {written} (bioimage.io package).")

    def _on_failed(self, error: UserError) -> None:
        self._status.setText(f"Export failed: {error}")
        show_error(f"Could not export the model: {error}")
