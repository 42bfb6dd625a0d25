"""The Export widget and the Labels writer in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import tifffile  # noqa: E402

from imagej_reader import read_imagej_metadata  # noqa: E402
from napari_unet._widgets import export_widget as ew  # noqa: E402
from napari_unet._widgets.layers.results import RESULT_KEY, make_target  # noqa: E402
from napari_unet._widgets.layers.session import session_for  # noqa: E402
from napari_unet.core import SegmentationResult  # noqa: E402
from napari_unet.core.inference.layout import infer_layout  # noqa: E402
from napari_unet.core.io import atomic  # noqa: E402
from napari_unet.core.io.tiff import LabelsDtypeWarning  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 20_000
CLASSES = ["background", "interior", "boundary"]


def _labels(shape, top=9, seed=0):
    labels = np.random.default_rng(seed).integers(0, top, size=shape, endpoint=True).astype(np.uint16)
    labels.flat[-1] = top
    return labels


def _probabilities(shape, seed=0):
    raw = np.random.default_rng(seed).random((len(CLASSES), *shape)).astype(np.float32)
    return raw / raw.sum(axis=0)


def add_result(viewer, image, output, data):
    """Show a segmentation result of ``image`` the way the Segment widget does."""
    layout = infer_layout(tuple(image.data.shape), in_channels=1)
    labels = None if output == "probabilities" else data
    probabilities = data if output == "probabilities" else None
    result = SegmentationResult(
        output=output,
        labels=labels,
        probabilities=probabilities,
        class_names=CLASSES,
        n_objects=int(np.max(data)) if output == "instances" else 0,
        device="cpu",
        seconds=0.0,
    )
    return session_for(viewer).results.show(viewer, make_target(image, layout), result)


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Export")
    assert isinstance(widget, ew.ExportWidget)
    return viewer, widget


@pytest.fixture
def notices(monkeypatch) -> dict[str, list[str]]:
    """Messages the widget shows as napari notifications, by kind."""
    shown: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in shown:
        monkeypatch.setattr(ew, f"show_{kind}", shown[kind].append)
    return shown


def run_export(qtbot, widget):
    assert widget.export_button.isEnabled(), widget.export_button.toolTip()
    worker = widget.export()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    return worker


def test_all_results_are_written_named_after_their_images(qtbot, viewer_widget, tmp_path, notices):
    viewer, widget = viewer_widget
    cells = viewer.add_image(np.zeros((3, 16, 12), np.uint8), name="cells.tif", scale=(2.0, 0.5, 0.25))
    nuclei = viewer.add_image(np.zeros((10, 8), np.uint8), name="nuclei")
    cell_labels, nuclei_labels = _labels((3, 16, 12), 300), _labels((10, 8), 7, seed=1)
    [layer] = add_result(viewer, cells, "instances", cell_labels)
    add_result(viewer, nuclei, "instances", nuclei_labels)
    assert layer.metadata[RESULT_KEY]["output"] == "instances"

    widget.folder_edit.setText(str(tmp_path))
    assert widget.layer_combo.currentData() == ew.ALL_RESULTS
    assert widget.files_label.text() == "cells_labels.tif, nuclei_labels.tif"
    run_export(qtbot, widget)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells_labels.tif", "nuclei_labels.tif"]
    back = tifffile.imread(tmp_path / "cells_labels.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, cell_labels)
    meta = read_imagej_metadata(tmp_path / "cells_labels.tif")
    assert meta["imagej"]["slices"] == 3 and meta["imagej"]["spacing"] == pytest.approx(2.0)
    assert meta["pixel_width"] == pytest.approx(0.25) and meta["pixel_height"] == pytest.approx(0.5)
    assert meta["imagej"]["unit"] == "um"
    small = tifffile.imread(tmp_path / "nuclei_labels.tif")
    assert small.dtype == np.uint8
    np.testing.assert_array_equal(small, nuclei_labels)
    assert notices["error"] == [] and "Exported 2 file(s)" in notices["info"][0]


def test_a_time_series_result_keeps_its_axes_and_exports_as_frames(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    movie = viewer.add_image(
        np.zeros((4, 16, 12), np.uint8),
        name="movie",
        axis_labels=("t", "y", "x"),
        units=("s", "um", "um"),
        scale=(30.0, 0.5, 0.5),
    )
    [labels_layer] = add_result(viewer, movie, "instances", _labels((4, 16, 12), 5))
    assert tuple(labels_layer.axis_labels) == ("t", "y", "x")
    assert [str(u) for u in labels_layer.units] == [str(u) for u in movie.units]
    # a second result replaces the data in place and keeps the axes
    add_result(viewer, movie, "instances", _labels((4, 16, 12), 6, seed=2))
    assert tuple(labels_layer.axis_labels) == ("t", "y", "x")
    widget.choose_layer(labels_layer)
    widget.folder_edit.setText(str(tmp_path))
    run_export(qtbot, widget)
    meta = read_imagej_metadata(tmp_path / "movie_labels.tif")
    assert meta["imagej"].get("frames") == 4 and "slices" not in meta["imagej"]


def test_class_mask_needs_classes_or_probabilities(qtbot, viewer_widget, tmp_path, notices):
    viewer, widget = viewer_widget
    image = viewer.add_image(np.zeros((12, 10), np.uint8), name="img")
    [labels_layer] = add_result(viewer, image, "instances", _labels((12, 10)))
    widget.choose_layer(labels_layer)
    assert not widget.classes_radio.isEnabled()
    assert "Not available" in widget.classes_radio.toolTip()
    assert not widget.probabilities_check.isEnabled()

    probabilities = _probabilities((12, 10))
    add_result(viewer, image, "probabilities", probabilities)
    assert widget.classes_radio.isEnabled() and widget.probabilities_check.isEnabled()
    widget.classes_radio.setChecked(True)
    widget.probabilities_check.setChecked(True)
    widget.folder_edit.setText(str(tmp_path))
    assert widget.files_label.text() == "img_classes.tif, img_probabilities.tif"
    run_export(qtbot, widget)

    mask = tifffile.imread(tmp_path / "img_classes.tif")
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, probabilities.argmax(axis=0))
    back = tifffile.imread(tmp_path / "img_probabilities.tif")
    assert back.dtype == np.float32 and back.shape == (3, 12, 10)
    np.testing.assert_allclose(back, probabilities)


def test_a_plain_labels_layer_can_only_be_written_as_it_is(viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    painted = viewer.add_labels(_labels((6, 6)), name="my painting")
    widget.choose_layer(painted)
    widget.folder_edit.setText(str(tmp_path))
    assert widget.instances_radio.isChecked() and not widget.classes_radio.isEnabled()
    assert widget.files_label.text() == "my painting_labels.tif"


class _LazyLabels:
    """A zarr-like array: sliced for display, read whole only through ``__array__`` (recorded by thread)."""

    def __init__(self, data):
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.whole_reads: list[str] = []

    def __getitem__(self, key):
        return self._data[key]

    def __len__(self):
        return len(self._data)

    def __array__(self, dtype=None, copy=None):
        self.whole_reads.append(threading.current_thread().name)
        return np.asarray(self._data, dtype=dtype)


def test_lazy_results_are_read_in_the_export_worker_not_on_the_gui_thread(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    labels = _labels((64, 48), 40)
    lazy = _LazyLabels(labels)
    layer = viewer.add_labels(lazy, name="slide")
    lazy.whole_reads.clear()  # napari may look at the data when it adds the layer
    widget.choose_layer(layer)
    widget.folder_edit.setText(str(tmp_path))
    run_export(qtbot, widget)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "slide_labels.tif"), labels)
    assert lazy.whole_reads, "the export never read the layer"
    assert threading.main_thread().name not in lazy.whole_reads


def test_in_memory_labels_are_copied_when_the_export_starts(qtbot, viewer_widget, tmp_path, monkeypatch):
    viewer, widget = viewer_widget
    labels = _labels((16, 16), 5)
    layer = viewer.add_labels(labels.copy(), name="painted")
    widget.choose_layer(layer)
    widget.folder_edit.setText(str(tmp_path))
    gate = threading.Event()
    real = ew.export_job

    def held(items, **options):
        gate.wait(10)
        return (yield from real(items, **options))

    monkeypatch.setattr(ew, "export_job", held)
    worker = widget.export()
    layer.data[:] = 0  # painting while the export waits does not change what is written
    gate.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert worker is not None
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "painted_labels.tif"), labels)


def test_existing_files_are_refused_by_name_unless_overwrite(qtbot, viewer_widget, tmp_path, notices):
    viewer, widget = viewer_widget
    image = viewer.add_image(np.zeros((8, 8), np.uint8), name="img")
    labels = _labels((8, 8))
    add_result(viewer, image, "instances", labels)
    (tmp_path / "img_labels.tif").write_bytes(b"precious")
    widget.folder_edit.setText(str(tmp_path))

    assert widget.export() is None
    assert len(notices["error"]) == 1 and "img_labels.tif" in notices["error"][0]
    assert "Overwrite" in widget.status_label.text()
    assert (tmp_path / "img_labels.tif").read_bytes() == b"precious"

    widget.overwrite_check.setChecked(True)
    run_export(qtbot, widget)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "img_labels.tif"), labels)


def test_cancel_stops_between_files_and_leaves_no_partial_file(qtbot, viewer_widget, tmp_path, monkeypatch):
    viewer, widget = viewer_widget
    for name in ("a", "b"):
        image = viewer.add_image(np.zeros((8, 8), np.uint8), name=name)
        add_result(viewer, image, "instances", _labels((8, 8)))
    reached, release = threading.Event(), threading.Event()
    real_job = ew.export_job

    def paused_job(items, **kwargs):
        """Pause while the first file is being written (after the worker's abort check)."""
        inner = real_job(items, **kwargs)
        yield next(inner)
        reached.set()
        release.wait(20)
        return (yield from inner)

    monkeypatch.setattr(ew, "export_job", paused_job)
    widget.folder_edit.setText(str(tmp_path))

    widget.export_button.click()
    assert reached.wait(10)
    assert widget.is_running and widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    # a.tif was being written when Cancel was pressed: it is complete; b was never started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_labels.tif"]
    assert tifffile.imread(tmp_path / "a_labels.tif").shape == (8, 8)
    assert widget.status_label.text().startswith("Cancelled: 1 file(s)")
    assert widget.export_button.isEnabled()


def test_unwritable_folder_is_a_message_and_leaves_no_file(qtbot, viewer_widget, tmp_path, monkeypatch, notices):
    viewer, widget = viewer_widget
    image = viewer.add_image(np.zeros((8, 8), np.uint8), name="img")
    add_result(viewer, image, "instances", _labels((8, 8)))
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permissions: refuse the temporary file as a read-only folder would

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(atomic, "_create_temporary", refuse)
    widget.folder_edit.setText(str(folder))
    try:
        run_export(qtbot, widget)
    finally:
        folder.chmod(0o755)
    assert len(notices["error"]) == 1 and "no permission to write" in notices["error"][0]
    assert "Export failed after 0 file(s)" in widget.status_label.text()
    assert notices["info"] == []
    assert list(folder.iterdir()) == []


def test_missing_folder_is_refused(viewer_widget, tmp_path, notices):
    viewer, widget = viewer_widget
    image = viewer.add_image(np.zeros((8, 8), np.uint8), name="img")
    add_result(viewer, image, "instances", _labels((8, 8)))
    widget.folder_edit.setText(str(tmp_path / "nope"))
    assert widget.export() is None
    assert "does not exist" in notices["error"][0]
    assert not (tmp_path / "nope").exists()


# --------------------------------------------------------------------------- the writer contribution


def test_layers_save_with_the_plugin_writes_a_calibrated_imagej_file(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = _labels((4, 10, 12), 500)
    viewer.add_labels(labels, name="seg", scale=(1.0, 250.0, 250.0), units=("micrometer", "nanometer", "nanometer"))
    written = viewer.layers.save(str(tmp_path / "seg.tif"), plugin="napari-unet-toolkit")
    assert written == [str(tmp_path / "seg.tif")]
    back = tifffile.imread(tmp_path / "seg.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    meta = read_imagej_metadata(tmp_path / "seg.tif")
    assert meta["imagej"]["unit"] == "nm" and meta["imagej"]["spacing"] == pytest.approx(1000.0)
    assert meta["pixel_width"] == pytest.approx(250.0) and meta["imagej"]["slices"] == 4


def test_the_save_dialog_offers_our_writer_under_the_name_the_export_widget_gives(viewer_widget, tmp_path):
    """What File > Save Layers... does: one file-type entry per compatible writer, decoded back to a writer."""
    from napari._qt.qt_viewer import _npe2_decode_selected_filter
    from napari.plugins import _npe2

    viewer, widget = viewer_widget
    layer = viewer.add_labels(_labels((3, 8, 8), 20).astype(np.int32), name="seg", scale=(2.0, 0.5, 0.5))
    filters, writers = _npe2.file_extensions_string_for_layers([layer])
    entry = next(f for f in filters.split(";;") if f.startswith(ew.SAVE_FILTER))
    assert entry == f"{ew.SAVE_FILTER} (*.tif *.tiff)" and ew.SAVE_FILTER in widget.save_hint.text()
    writer = _npe2_decode_selected_filter(filters, entry, writers)
    assert writer.command == "napari-unet-toolkit.write_labels"
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "seg.tif"), selected=True, _writer=writer)  # as the dialog calls it
    meta = read_imagej_metadata(tmp_path / "seg.tif")
    assert meta["imagej"]["spacing"] == pytest.approx(2.0) and tifffile.imread(tmp_path / "seg.tif").dtype == np.uint8


def test_save_without_a_plugin_uses_the_first_writer_napari_found(make_napari_viewer, tmp_path):
    """Without plugin=, napari takes the first compatible writer: ours only if this environment found it first."""
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    viewer.add_labels(_labels((3, 8, 8), 20).astype(np.int32), name="seg", scale=(2.0, 0.5, 0.5))
    tif_writers = [
        w for w in PluginManager.instance().iter_compatible_writers(["labels"]) if ".tif" in w.filename_extensions
    ]
    assert {w.command for w in tif_writers} >= {"napari.write_labels", "napari-unet-toolkit.write_labels"}
    ours_first = tif_writers[0].command == "napari-unet-toolkit.write_labels"
    with warnings.catch_warnings():
        # napari's own writer passes a (3, 8, 8) stack to tifffile, which warns that it stores it as RGB
        warnings.filterwarnings("ignore", "<tifffile.TiffWriter.write>", DeprecationWarning)
        viewer.layers.save(str(tmp_path / "seg.tif"))
    with tifffile.TiffFile(tmp_path / "seg.tif") as tif:
        assert tif.is_imagej == ours_first
        assert (tif.pages[0].dtype == np.uint8) if ours_first else (tif.pages[0].dtype.kind == "i")


def test_layers_save_above_65535_labels_warns_and_writes_uint32(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((6, 6), np.uint32)
    labels[2:4, 2:4] = 70_000
    viewer.add_labels(labels, name="many")
    with pytest.warns(LabelsDtypeWarning, match="65535"):
        viewer.layers.save(str(tmp_path / "many.tiff"), plugin="napari-unet-toolkit")
    back = tifffile.imread(tmp_path / "many.tiff")
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    assert [p.name for p in tmp_path.iterdir()] == ["many.tiff"]


# --------------------------------------------------------------------------- closing, full disk


def _two_results_paused(qtbot, viewer, widget, tmp_path, monkeypatch):
    """Two result layers, an old b_labels.tif, and an export paused while it writes the first file."""
    for name in ("a", "b"):
        image = viewer.add_image(np.zeros((8, 8), np.uint8), name=name)
        add_result(viewer, image, "instances", _labels((8, 8)))
    (tmp_path / "b_labels.tif").write_bytes(b"previous export")
    reached, release = threading.Event(), threading.Event()
    real_job = ew.export_job

    def paused_job(items, **kwargs):
        inner = real_job(items, **kwargs)
        yield next(inner)
        reached.set()
        release.wait(20)
        return (yield from inner)

    monkeypatch.setattr(ew, "export_job", paused_job)
    widget.folder_edit.setText(str(tmp_path))
    widget.overwrite_check.setChecked(True)
    widget.export_button.click()
    assert reached.wait(10)
    return release


def test_closing_the_dock_stops_the_export_between_files(qtbot, viewer_widget, tmp_path, monkeypatch):
    from job_gates import close_dock_of

    viewer, widget = viewer_widget
    release = _two_results_paused(qtbot, viewer, widget, tmp_path, monkeypatch)

    close_dock_of(viewer, widget)

    assert widget.worker.abort_requested
    release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_labels.tif", "b_labels.tif"]
    assert tifffile.imread(tmp_path / "a_labels.tif").shape == (8, 8)  # complete
    assert (tmp_path / "b_labels.tif").read_bytes() == b"previous export"  # never started
    assert widget.export() is None


def test_closing_the_viewer_while_exporting_raises_nothing(qtbot, viewer_widget, tmp_path, monkeypatch):
    viewer, widget = viewer_widget
    release = _two_results_paused(qtbot, viewer, widget, tmp_path, monkeypatch)
    worker = widget.worker

    viewer.close()
    qtbot.wait(50)  # the window is deleted later: that stops the export

    assert worker.abort_requested
    release.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)
    qtbot.wait(50)  # let queued signals of the worker arrive (pytest-qt fails on exceptions in them)
    assert (tmp_path / "b_labels.tif").read_bytes() == b"previous export"


def test_full_disk_keeps_the_previous_files_and_leaves_no_partial_file(
    qtbot, viewer_widget, tmp_path, monkeypatch, notices
):
    import errno

    viewer, widget = viewer_widget
    image = viewer.add_image(np.zeros((8, 8), np.uint8), name="img")
    add_result(viewer, image, "instances", _labels((8, 8)))
    old = tmp_path / "img_labels.tif"
    tifffile.imwrite(old, np.ones((3, 3), np.uint8))
    before = old.read_bytes()

    def no_space(file, *args, **kwargs):
        file.write(b"II*\x00" + b"\x00" * 100)  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", no_space)
    widget.folder_edit.setText(str(tmp_path))
    widget.overwrite_check.setChecked(True)
    run_export(qtbot, widget)

    assert len(notices["error"]) == 1 and "disk is full" in notices["error"][0]
    assert old.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["img_labels.tif"]


def test_a_labels_layer_a_tiff_cannot_hold_is_refused_with_a_message(viewer_widget, tmp_path, notices):
    viewer, widget = viewer_widget
    five_d = viewer.add_labels(np.ones((2, 1, 2, 4, 4), np.uint8), name="five-d")
    widget.choose_layer(five_d)  # listing it must not raise (the plan of the files is made at once)
    widget.folder_edit.setText(str(tmp_path))

    assert not widget.export_button.isEnabled()
    assert "2-D, 3-D or 4-D" in widget.export_button.toolTip()
    assert widget.export() is None
    assert len(notices["error"]) == 1 and "5 dimensions" in notices["error"][0]
    assert list(tmp_path.iterdir()) == []


def test_objects_are_also_written_as_roi_zip_and_measurements(qtbot, viewer_widget, tmp_path, notices, nuclei_crop):
    import csv

    import roifile

    viewer, widget = viewer_widget
    image, truth = nuclei_crop
    source = viewer.add_image(image, name="nuclei.tif", scale=(0.5, 0.5))
    add_result(viewer, source, "instances", truth.astype(np.uint16))
    widget.folder_edit.setText(str(tmp_path))
    assert widget.rois_check.isEnabled() and not widget.rois_check.isChecked()
    widget.rois_check.setChecked(True)
    widget.measurements_check.setChecked(True)
    assert widget.files_label.text() == "nuclei_labels.tif, nuclei_rois.zip, nuclei_measurements.csv"
    run_export(qtbot, widget)
    n = len(np.unique(truth)) - 1
    assert len(roifile.roiread(tmp_path / "nuclei_rois.zip")) == n
    with (tmp_path / "nuclei_measurements.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n and float(rows[0]["area_um2"]) == pytest.approx(int(rows[0]["pixels"]) * 0.25)
    first = truth == int(rows[0]["label"])
    assert float(rows[0]["mean_intensity"]) == pytest.approx(float(image[first].mean()))
    assert notices["error"] == [] and "Exported 3 file(s)" in notices["info"][0]


def test_object_files_are_greyed_out_for_class_masks(viewer_widget):
    viewer, widget = viewer_widget
    source = viewer.add_image(np.zeros((10, 8), np.uint8), name="cells")
    add_result(viewer, source, "classes", _labels((10, 8), 2).astype(np.uint8))
    assert widget.classes_radio.isChecked()
    assert not widget.rois_check.isEnabled() and "classes are not objects" in widget.rois_check.toolTip()
