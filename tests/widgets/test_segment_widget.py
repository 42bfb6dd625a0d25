"""The Segment widget in a real napari viewer (under Xvfb), with a tiny untrained model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import tifffile  # noqa: E402

from job_gates import Gate  # noqa: E402
from napari_unet._widgets import segment_widget as sw  # noqa: E402
from napari_unet._widgets.layers.proxies import unwrap_proxy  # noqa: E402
from napari_unet._widgets.layers.session import session_for  # noqa: E402
from napari_unet.core import new_model, save_model, segment  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30_000


def _dsb_train_image(shared_data: Path, kind: str) -> np.ndarray:
    """The first training image of the DSB 2018 set of ``kind`` ("gray" or "color")."""
    folder = shared_data / "dsb2018_nuclei"
    with (folder / "images.csv").open() as fh:
        files = sorted(r["file"] for r in csv.DictReader(fh) if r["split"] == "train" and r["kind"] == kind)
    return tifffile.imread(folder / "train" / "images" / files[0])


@pytest.fixture(autouse=True)
def _seeded_model_weights():
    """Seed torch before the tiny model is made: with seed 1 its (untrained) output has
    hundreds of objects and all three classes on the nuclei crop, so comparisons bite."""
    import torch

    torch.manual_seed(1)


@pytest.fixture(scope="module")
def nuclei(shared_data) -> np.ndarray:
    """A 96x96 crop of the first DSB 2018 training image (grayscale uint8 nuclei)."""
    first = sorted((shared_data / "dsb2018_nuclei" / "train" / "images").glob("*.tif"))[0]
    image = tifffile.imread(first)
    assert image.ndim == 2
    return np.ascontiguousarray(image[:96, :96])


@pytest.fixture
def viewer_widget(make_napari_viewer, tiny_model_file):
    """A viewer with the Segment widget docked, using the tiny model."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    assert isinstance(widget, sw.SegmentWidget)
    assert widget.load_model_file(tiny_model_file)
    return viewer, widget


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages the widget shows with napari's show_error."""
    shown: list[str] = []
    monkeypatch.setattr(sw, "show_error", shown.append)
    return shown


def run_segment(qtbot, widget) -> None:
    """Click Segment and wait until the job is over (its result handled)."""
    assert widget.segment_button.isEnabled(), widget.segment_button.toolTip()
    widget.segment_button.click()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def layer_named(viewer, name):
    matches = [layer for layer in viewer.layers if layer.name == name]
    assert len(matches) == 1, [layer.name for layer in viewer.layers]
    return matches[0]


def test_segment_makes_labels_layer_with_image_geometry(qtbot, viewer_widget, nuclei):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei", scale=(0.5, 0.25), translate=(10.0, -3.0))
    run_segment(qtbot, widget)

    labels = layer_named(viewer, "nuclei [U-Net]")
    assert labels.__class__.__name__ == "Labels"
    assert labels.data.shape == nuclei.shape
    assert labels.data.dtype.kind == "u"
    np.testing.assert_allclose(labels.scale, (0.5, 0.25))
    np.testing.assert_allclose(labels.translate, (10.0, -3.0))
    expected = segment(nuclei, widget.session.model, output="instances", device="cpu")
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert widget.status_label.text().startswith("Done")
    assert widget.segment_button.isEnabled()


def test_second_run_replaces_the_result_even_after_renames(qtbot, viewer_widget, nuclei):
    viewer, widget = viewer_widget
    image = viewer.add_image(nuclei, name="nuclei")
    run_segment(qtbot, widget)
    first = unwrap_proxy(layer_named(viewer, "nuclei [U-Net]"))
    first.name = "my labels"
    image.name = "renamed image"
    n_layers = len(viewer.layers)

    widget.output_combo.setCurrentIndex(widget.output_combo.findData("classes"))
    run_segment(qtbot, widget)

    assert len(viewer.layers) == n_layers
    assert [unwrap_proxy(layer) for layer in viewer.layers if layer.name == "my labels"] == [first]
    assert first.data.dtype == np.uint16  # room for label 256 while editing (issue 17); export narrows it
    expected = segment(nuclei, widget.session.model, output="classes", device="cpu")
    np.testing.assert_array_equal(first.data, expected.labels)

    viewer.layers.remove(first)  # a deleted result is not resurrected: the next run adds a new one
    run_segment(qtbot, widget)
    assert layer_named(viewer, "renamed image [U-Net]").data.shape == nuclei.shape


def test_cancel_leaves_the_previous_result_untouched(qtbot, viewer_widget, nuclei, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei")
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("classes"))
    run_segment(qtbot, widget)
    labels = layer_named(viewer, "nuclei [U-Net]")
    labels.data = np.full(nuclei.shape, 7, np.uint8)  # unlike anything the model makes
    before = labels.data.tobytes()
    n_layers = len(viewer.layers)

    gate = Gate(sw.segment_job)
    monkeypatch.setattr(sw, "segment_job", gate.job)
    widget.segment_button.click()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT_MS)
    assert widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert widget.worker.abort_requested
    assert layer_named(viewer, "nuclei [U-Net]").data.tobytes() == before
    assert len(viewer.layers) == n_layers
    assert "Cancelled" in widget.status_label.text()


def test_current_plane_writes_only_that_plane(qtbot, viewer_widget, nuclei):
    viewer, widget = viewer_widget
    stack = np.stack([nuclei[:64, :64], nuclei[32:, 32:], nuclei[:64, 32:]])
    viewer.add_image(stack, name="stack")
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("classes"))
    run_segment(qtbot, widget)
    labels = layer_named(viewer, "stack [U-Net]")
    assert labels.data.shape == stack.shape
    assert widget.current_plane.isEnabled()
    widget.current_plane.setChecked(True)
    viewer.dims.set_current_step(0, 1)
    run_segment(qtbot, widget)
    assert layer_named(viewer, "stack [U-Net]").data.shape == stack.shape  # not edited: written in place
    assert not [layer for layer in viewer.layers if layer.name.startswith("stack [U-Net] (")]

    labels.data = np.full(stack.shape, 9, np.uint16)  # the user's edits (here from the console)
    run_segment(qtbot, widget)
    # the edited layer is kept as it is; the new result has its other planes and the new plane
    assert (layer_named(viewer, "stack [U-Net]").data == 9).all()
    data = layer_named(viewer, "stack [U-Net] (2)").data
    assert (data[0] == 9).all() and (data[2] == 9).all()
    expected = segment(stack[1], widget.session.model, output="classes", device="cpu").labels
    np.testing.assert_array_equal(data[1], expected)
    other = segment(stack[0], widget.session.model, output="classes", device="cpu").labels
    assert (expected != other).any()  # so the test can tell which plane was segmented


def test_current_plane_instances_keep_ids_unique(qtbot, viewer_widget, nuclei):
    viewer, widget = viewer_widget
    stack = np.stack([nuclei[:64, :64], nuclei[32:, 32:]])
    viewer.add_image(stack, name="stack")
    labels = viewer.add_labels(np.zeros(stack.shape, np.uint8), name="placeholder")
    widget.session.results.bind(widget.image_layer, "labels", [labels])
    labels.data[0] = 250  # an object ID near the top of uint8
    widget.current_plane.setChecked(True)
    viewer.dims.set_current_step(0, 1)
    run_segment(qtbot, widget)

    expected = segment(stack[1], widget.session.model, output="instances", device="cpu").labels
    assert expected.max() > 5
    assert (layer_named(viewer, "placeholder").data[1] == 0).all()  # not Segment's: kept as it is
    (result,) = widget.session.results.find(viewer, widget.image_layer, "labels")
    data = result.data
    assert (data[0] == 250).all()
    assert ((data[1] > 250) == (expected > 0)).all()  # new IDs above the old ones
    assert data.dtype.itemsize >= 2  # widened rather than wrapped around
    assert len(np.unique(data[1][data[1] > 0])) == expected.max()


def test_corrupt_or_missing_model_file_keeps_the_model(viewer_widget, tmp_path, errors):
    _viewer, widget = viewer_widget
    model = widget.session.model
    text = widget.model_combo.currentText()
    bad = tmp_path / "bad.unet.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")

    assert widget.load_model_file(bad) is False
    assert widget.load_model_file(tmp_path / "missing.unet.safetensors") is False

    assert len(errors) == 2
    assert "bad.unet.safetensors" in errors[0]
    assert "does not exist" in errors[1]
    assert widget.session.model is model
    assert widget.model_combo.currentText() == text


def test_segment_button_needs_an_image_layer(viewer_widget, nuclei):
    viewer, widget = viewer_widget
    assert not widget.segment_button.isEnabled()
    assert "image layer" in widget.segment_button.toolTip()
    viewer.add_labels(np.zeros((8, 8), np.uint8))
    assert not widget.segment_button.isEnabled()
    assert widget.image_combo.count() == 0

    image = viewer.add_image(nuclei, name="nuclei")
    assert widget.segment_button.isEnabled()
    image.name = "renamed"
    assert widget.image_combo.currentText() == "renamed"
    viewer.layers.remove(image)
    assert not widget.segment_button.isEnabled()


def test_segment_button_needs_a_model(make_napari_viewer, nuclei, monkeypatch):
    # an installation without shipped models (they are chosen by default otherwise)
    monkeypatch.setattr(sw, "shipped_models", lambda: [])
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    viewer.add_image(nuclei)
    assert not widget.segment_button.isEnabled()
    assert "model" in widget.segment_button.toolTip()


def test_result_goes_to_the_layer_the_job_started_from(qtbot, viewer_widget, nuclei, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="a")
    b = viewer.add_image(nuclei[:64, :80], name="b")
    widget.image_layer = layer_named(viewer, "a")
    gate = Gate(sw.segment_job)
    monkeypatch.setattr(sw, "segment_job", gate.job)
    widget.segment_button.click()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT_MS)

    assert not widget.segment_button.isEnabled()
    assert "running" in widget.segment_button.toolTip()
    widget.image_layer = b
    viewer.layers.selection.active = b
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert layer_named(viewer, "a [U-Net]").data.shape == nuclei.shape
    assert not [layer for layer in viewer.layers if layer.name == "b [U-Net]"]


def test_probabilities_are_one_layer_per_class(qtbot, viewer_widget, nuclei):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei", scale=(2.0, 2.0))
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("probabilities"))
    run_segment(qtbot, widget)
    run_segment(qtbot, widget)

    names = widget.session.model.description.class_names
    layers = [layer for layer in viewer.layers if "[U-Net probabilities]" in layer.name]
    assert [layer.name for layer in layers] == [f"nuclei [U-Net probabilities] {c}" for c in names]
    total = sum(layer.data for layer in layers)
    np.testing.assert_allclose(total, 1.0, atol=1e-4)
    assert all(tuple(layer.scale) == (2.0, 2.0) for layer in layers)


def test_rgb_layer_gives_a_2d_result(qtbot, viewer_widget, shared_data):
    viewer, widget = viewer_widget
    rgb = np.ascontiguousarray(_dsb_train_image(shared_data, "color")[:64, :80])
    assert rgb.shape == (64, 80, 3)
    layer = viewer.add_image(rgb, name="colour", scale=(0.5, 0.5))
    assert layer.rgb
    run_segment(qtbot, widget)
    labels = layer_named(viewer, "colour [U-Net]")
    assert labels.data.shape == (64, 80)
    np.testing.assert_allclose(labels.scale, (0.5, 0.5))


def test_multichannel_layer_uses_the_chosen_channel_axis(qtbot, viewer_widget, nuclei, tmp_path):
    viewer, widget = viewer_widget
    model = save_model(new_model(in_channels=2, depth=2, base_features=4), tmp_path / "two.unet.safetensors")
    assert widget.load_model_file(model)
    two_channels = np.stack([nuclei[:64, :64], nuclei[32:, 32:]])[None].repeat(3, axis=0)  # (Z, C, Y, X)
    viewer.add_image(two_channels, name="zcyx", scale=(3.0, 1.0, 0.5, 0.5), translate=(0.0, 0.0, 5.0, 5.0))
    widget.channel_spin.setValue(1)
    run_segment(qtbot, widget)

    labels = layer_named(viewer, "zcyx [U-Net]")
    assert labels.data.shape == (3, 64, 64)
    np.testing.assert_allclose(labels.scale, (3.0, 0.5, 0.5))
    np.testing.assert_allclose(labels.translate, (0.0, 5.0, 5.0))


def test_layout_error_is_a_notification_and_changes_no_layer(viewer_widget, nuclei, tmp_path, errors):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei")
    rgb_model = save_model(new_model(in_channels=3, depth=2, base_features=4), tmp_path / "rgb.unet.safetensors")
    assert widget.load_model_file(rgb_model)
    names = [layer.name for layer in viewer.layers]

    widget.segment_button.click()

    assert widget.worker is None or not widget.is_running
    assert len(errors) == 1 and "channels" in errors[0]
    assert [layer.name for layer in viewer.layers] == names


def test_widgets_of_one_viewer_share_one_session(viewer_widget):
    viewer, widget = viewer_widget
    assert session_for(viewer) is widget.session
    other = sw.SegmentWidget(viewer)
    assert other.session is widget.session
    assert other.model_combo.currentText() == widget.model_combo.currentText()
    previous = widget.session.model
    widget.session.set_model(new_model(depth=2, base_features=4, name="fresh"), "fresh (unsaved)")
    assert other.model_combo.currentText() == "fresh"
    widget.session.revert()
    assert other.session.model is previous
    assert other.model_combo.currentText() == widget.model_combo.currentText() != "fresh"
    widget.session.set_model(new_model(depth=2, base_features=4, name="newer"), "newer (unsaved)")
    texts = [other.model_combo.itemText(row) for row in range(other.model_combo.count())]
    assert "newer" in texts and "fresh" not in texts  # an in-memory model that can't come back is dropped
    other.deleteLater()


# --------------------------------------------------------------------------- closing, deleting, clicking twice


@pytest.fixture
def notices(monkeypatch) -> dict[str, list[str]]:
    """Messages the widget shows as napari notifications, by kind."""
    shown: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in shown:
        monkeypatch.setattr(sw, f"show_{kind}", shown[kind].append)
    return shown


def _start_paused(qtbot, widget, monkeypatch) -> Gate:
    """Click Segment with the job paused after its first progress report."""
    gate = Gate(sw.segment_job)
    monkeypatch.setattr(sw, "segment_job", gate.job)
    widget.segment_button.click()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT_MS)
    assert widget.is_running
    return gate


def _previous_result(qtbot, viewer, widget, nuclei):
    """Segment once (classes) and overwrite the result with values unlike any the model makes."""
    viewer.add_image(nuclei, name="nuclei")
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("classes"))
    run_segment(qtbot, widget)
    labels = layer_named(viewer, "nuclei [U-Net]")
    labels.data = np.full(nuclei.shape, 7, np.uint8)
    return labels


def test_closing_the_dock_cancels_the_job_and_keeps_the_previous_result(qtbot, viewer_widget, nuclei, monkeypatch):
    from job_gates import close_dock_of

    viewer, widget = viewer_widget
    labels = _previous_result(qtbot, viewer, widget, nuclei)
    before = labels.data.tobytes()
    names = [layer.name for layer in viewer.layers]
    gate = _start_paused(qtbot, widget, monkeypatch)

    close_dock_of(viewer, widget)

    assert widget.worker.abort_requested  # stopped at once, before the job went on
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == names
    assert layer_named(viewer, "nuclei [U-Net]").data.tobytes() == before
    assert widget.segment() is None  # a closed widget starts nothing


def test_closing_the_viewer_while_segmenting_adds_nothing_and_raises_nothing(qtbot, viewer_widget, nuclei, monkeypatch):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei")
    gate = _start_paused(qtbot, widget, monkeypatch)
    worker = widget.worker

    viewer.close()

    assert worker.abort_requested
    gate.release.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)
    qtbot.wait(50)  # let queued signals of the worker arrive (pytest-qt fails on exceptions in them)
    assert len(viewer.layers) == 0


def test_deleting_the_image_during_the_job_cancels_it_and_adds_no_layer(
    qtbot, viewer_widget, nuclei, monkeypatch, notices
):
    viewer, widget = viewer_widget
    labels = _previous_result(qtbot, viewer, widget, nuclei)
    before = labels.data.tobytes()
    other = viewer.add_image(nuclei[:64, :64], name="other")
    widget.image_layer = layer_named(viewer, "nuclei")
    gate = _start_paused(qtbot, widget, monkeypatch)

    viewer.layers.remove(layer_named(viewer, "nuclei"))

    assert widget.worker.abort_requested
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["nuclei [U-Net]", "other"]
    assert layer_named(viewer, "nuclei [U-Net]").data.tobytes() == before
    assert other.data.shape == (64, 64) and not [la for la in viewer.layers if la.name == "other [U-Net]"]
    assert len(notices["warning"]) == 1 and "'nuclei' was deleted" in notices["warning"][0]
    assert "deleted" in widget.status_label.text()
    assert notices["error"] == []


def test_image_deleted_as_the_job_ends_gets_no_result(qtbot, viewer_widget, nuclei, notices):
    viewer, widget = viewer_widget
    image = viewer.add_image(nuclei, name="nuclei")
    target = sw.make_target(image, widget._layout_of(image, widget.session.model))
    job = sw._RunningJob(target)
    result = segment(nuclei, widget.session.model, output="instances", device="cpu")
    viewer.layers.remove(image)  # not the running job's layer from the widget's view: no job is running

    widget._on_returned(job, result)

    assert len(viewer.layers) == 0
    assert len(notices["warning"]) == 1 and "not added" in notices["warning"][0]


def test_second_segment_while_running_is_refused_with_a_message(qtbot, viewer_widget, nuclei, monkeypatch, notices):
    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei")
    gate = _start_paused(qtbot, widget, monkeypatch)
    first = widget.worker

    assert not widget.segment_button.isEnabled()
    assert widget.segment() is None
    assert widget.worker is first
    assert len(notices["info"]) == 1 and "running" in notices["info"][0]
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    expected = segment(nuclei, widget.session.model, output="instances", device="cpu")
    np.testing.assert_array_equal(layer_named(viewer, "nuclei [U-Net]").data, expected.labels)


# --------------------------------------------------------------------------- odd images through the GUI


def _odd_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    raw = rng.random((24, 20))
    nan_inf = raw.astype(np.float32)
    nan_inf[3, :] = np.nan
    nan_inf[5, 2] = np.inf
    nan_inf[7, 4] = -np.inf
    return {
        "bool": raw > 0.5,
        "int8": (raw * 200 - 100).astype(np.int8),
        "int16": (raw * 2000 - 1000).astype(np.int16),
        "int64": (raw * 1e12).astype(np.int64),
        "uint32": (raw * 4e9).astype(np.uint32),
        "float16": raw.astype(np.float16),
        "float64": raw,
        "nan-inf": nan_inf,
        "constant": np.full((24, 20), 42, np.uint16),
        "one-pixel-wide": (raw[:, :1] * 255).astype(np.uint8),
        "one-pixel-high": (raw[:1] * 255).astype(np.uint8),
        "five-d": rng.random((2, 1, 2, 12, 10)).astype(np.float32),
    }


@pytest.mark.parametrize("kind", list(_odd_images()))
def test_odd_images_give_the_core_result_without_an_error(qtbot, viewer_widget, kind, notices):
    viewer, widget = viewer_widget
    data = _odd_images()[kind]
    viewer.add_image(data, name="odd")
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("classes"))
    run_segment(qtbot, widget)

    assert notices["error"] == [], notices["error"]
    labels = layer_named(viewer, "odd [U-Net]")
    expected = segment(data, widget.session.model, output="classes", device="cpu")
    assert labels.data.shape == data.shape
    np.testing.assert_array_equal(labels.data, expected.labels)


def test_a_notice_of_the_job_reaches_the_user(qtbot, viewer_widget, nuclei, monkeypatch, notices):
    from napari_unet.core import Progress

    viewer, widget = viewer_widget
    viewer.add_image(nuclei, name="nuclei")
    real_job = sw.segment_job

    def out_of_memory_once(*args, **kwargs):
        yield Progress("notice", message="Out of memory on cuda: retrying with 256-pixel tiles")
        return (yield from real_job(*args, **kwargs))

    monkeypatch.setattr(sw, "segment_job", out_of_memory_once)
    run_segment(qtbot, widget)

    assert notices["info"] == ["Out of memory on cuda: retrying with 256-pixel tiles"]
    assert notices["error"] == []
    assert layer_named(viewer, "nuclei [U-Net]").data.shape == nuclei.shape


# ------------------------------------------------------------ large images (lazy layers)
def _multiscale_nuclei(tmp_path, nuclei):
    """A two-level zarr pyramid of a 384 x 384 mosaic of the nuclei crop."""
    zarr = pytest.importorskip("zarr")
    mosaic = np.tile(nuclei, (4, 4))
    group = zarr.open_group(str(tmp_path / "slide.zarr"), mode="w")
    group.create_array("0", shape=mosaic.shape, chunks=(128, 128), dtype=mosaic.dtype)[...] = mosaic
    group.create_array("1", shape=(192, 192), chunks=(128, 128), dtype=mosaic.dtype)[...] = mosaic[::2, ::2]
    return mosaic, [group["0"], group["1"]]


def test_a_multiscale_layer_is_segmented_block_by_block_into_a_lazy_layer(
    qtbot, viewer_widget, nuclei, tmp_path, monkeypatch, errors
):
    from napari_unet._widgets.layers import large_images
    from napari_unet.core.io.ome_zarr import open_result

    monkeypatch.setattr(large_images.tempfile, "gettempdir", lambda: str(tmp_path))
    viewer, widget = viewer_widget
    mosaic, levels = _multiscale_nuclei(tmp_path, nuclei)
    layer = viewer.add_image(levels, name="slide", multiscale=True, scale=(0.5, 0.5))
    assert large_images.is_large(layer)
    widget.image_layer = layer
    run_segment(qtbot, widget)
    assert errors == []
    result = layer_named(viewer, "slide [U-Net]")
    full = result.data[0] if result.multiscale else result.data  # one level: smaller than the 512-px pyramid floor
    assert full.shape == mosaic.shape
    assert not isinstance(full, np.ndarray)  # backed by the zarr folder, not loaded
    assert tuple(result.scale) == (0.5, 0.5)
    path = Path(result.metadata["napari_unet"]["path"])
    assert path.parent == tmp_path / "napari-unet" and path.name == "slide_labels.zarr"
    expected = segment(mosaic, session_for(viewer).model, device="cpu")
    assert expected.n_objects > 0 and np.asarray(open_result(path)[0][...]).max() == expected.n_objects
    assert "saved in" in widget.status_label.text()
    # A second run writes a new folder and replaces the layer instead of adding one.
    run_segment(qtbot, widget)
    assert [lyr.name for lyr in viewer.layers].count("slide [U-Net]") == 1
    assert Path(layer_named(viewer, "slide [U-Net]").metadata["napari_unet"]["path"]).name == "slide_labels-2.zarr"


def test_a_small_numpy_layer_is_not_large(viewer_widget, nuclei):
    from napari_unet._widgets.layers.large_images import is_large

    viewer, _ = viewer_widget
    assert not is_large(viewer.add_image(nuclei))


def test_an_in_memory_layer_too_large_to_segment_whole_goes_block_by_block(
    qtbot, viewer_widget, nuclei, tmp_path, monkeypatch, errors
):
    from napari_unet._widgets.layers import large_images
    from napari_unet.core.io import memory
    from napari_unet.core.io.ome_zarr import open_result

    monkeypatch.setattr(large_images.tempfile, "gettempdir", lambda: str(tmp_path))
    viewer, widget = viewer_widget
    layer = viewer.add_image(nuclei, name="mosaic")
    assert isinstance(layer.data, np.ndarray)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: nuclei.size * 4)  # less than whole results need
    widget.image_layer = layer
    run_segment(qtbot, widget)
    assert errors == []
    result = layer_named(viewer, "mosaic [U-Net]")
    assert not isinstance(result.data, np.ndarray)  # backed by the zarr folder
    path = Path(result.metadata["napari_unet"]["path"])
    assert path.name == "mosaic_labels.zarr" and np.asarray(open_result(path)[0][...]).shape == nuclei.shape
    assert "saved in" in widget.status_label.text()


def test_link_planes_gives_an_object_one_id_through_the_stack(qtbot, make_napari_viewer, nuclei_crop):
    from napari_unet.core import load_named_model

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    widget.session.set_model(load_named_model("nuclei"), source="nuclei")
    image, _ = nuclei_crop
    viewer.add_image(np.stack([image[:96, :96]] * 3), name="stack")
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("instances"))
    assert widget.stitch_spin.isEnabled() and widget.stitch_spin.text() == "off"
    widget.current_plane.setChecked(True)
    assert not widget.stitch_spin.isEnabled() and "Whole stack" in widget.stitch_spin.toolTip()
    widget.whole_stack.setChecked(True)
    widget.stitch_spin.setValue(0.5)
    run_segment(qtbot, widget)
    labels = viewer.layers["stack [U-Net]"].data
    assert labels.max() > 3 and np.array_equal(labels[0], labels[2])  # one ID per nucleus through the planes


def test_an_image_unlike_the_models_training_images_is_said_so_and_the_note_stays(
    qtbot, make_napari_viewer, tmp_path, nuclei, monkeypatch
):
    shown: list[str] = []
    monkeypatch.setattr(sw, "show_info", shown.append)
    model = new_model(depth=2, base_features=4, padding="same", name="fluorescence only")
    model.description.background_intensity = (0.0, 0.1)  # trained on dark backgrounds
    path = save_model(model, tmp_path / "dark.unet.safetensors")
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    assert widget.load_model_file(path)
    viewer.add_image((255 - nuclei).astype(np.uint8), name="brightfield")  # dark nuclei on a bright background
    run_segment(qtbot, widget)
    assert any("brighter background" in message for message in shown)
    assert "brighter background" in widget.status_label.text()  # the toast goes, the status line keeps it
    assert layer_named(viewer, "brightfield [U-Net]") is not None
    shown.clear()
    viewer.add_image(nuclei, name="fluorescence")
    widget.image_combo.setCurrentIndex(widget.image_combo.findText("fluorescence"))
    run_segment(qtbot, widget)
    assert not any("background" in message for message in shown)
    assert "background" not in widget.status_label.text()


def test_the_seeds_field_segments_with_the_users_seed_threshold_and_leaves_the_model_alone(
    qtbot, make_napari_viewer, nuclei_crop
):
    from napari_unet.core import load_named_model

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    model = load_named_model("nuclei")
    widget.session.set_model(model, source="nuclei")
    image, _ = nuclei_crop
    viewer.add_image(image, name="crop")
    assert widget.seed_spin.isEnabled() and widget.seed_spin.text() == "model (0.60)"
    run_segment(qtbot, widget)
    own = viewer.layers["crop [U-Net]"].data.copy()

    widget.seed_spin.setValue(0.99)
    run_segment(qtbot, widget)
    sure = viewer.layers["crop [U-Net]"].data
    rule = model.description.instance_rule.with_seed_threshold(0.99)
    expected = segment(image, model.with_instance_rule(rule), device="cpu")
    np.testing.assert_array_equal(sure, expected.labels)
    assert sure.max() < own.max()  # surer seeds: fewer nuclei in this crop (3 against 5)
    assert widget.session.model.description.instance_rule.seed_threshold == 0.6  # the model is unchanged
    assert f"{expected.n_objects} objects, seeds above 0.99 (set in Seeds; the model's own: 0.60)" in (
        widget.status_label.text()
    )

    widget.output_combo.setCurrentIndex(widget.output_combo.findData("classes"))
    assert not widget.seed_spin.isEnabled() and "Objects" in widget.seed_spin.toolTip()
    widget.session.set_model(load_named_model("em"), source="em")
    widget.output_combo.setCurrentIndex(widget.output_combo.findData("instances"))
    assert widget.seed_spin.isEnabled() and widget.seed_spin.text() == "cell > 0.99"  # the EM model's seed class
    widget.seed_spin.setValue(0.0)
    assert widget.seed_spin.text() == "model (0.90)"
