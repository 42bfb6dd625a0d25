"""The Fine-tune widget in a real napari viewer (under Xvfb), with a tiny model and a few steps."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from job_gates import Gate  # noqa: E402
from napari_unet._widgets import finetune_widget as fw  # noqa: E402
from napari_unet._widgets.layers.proxies import unwrap_proxy  # noqa: E402
from napari_unet._widgets.layers.session import session_for  # noqa: E402
from napari_unet.core import load_model  # noqa: E402
from napari_unet.core.io.atomic import OutputError  # noqa: E402
from napari_unet.core.training import finetune_job as fj  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def _seeded_model_weights():
    """Seed torch before the tiny model is made, so its (untrained) predictions are the same every run."""
    import torch

    torch.manual_seed(1)


@pytest.fixture
def viewer_widget(make_napari_viewer, tiny_model_file):
    """A viewer with the Fine-tune widget docked, the tiny model in its session, fast settings."""
    viewer = make_napari_viewer()
    session_for(viewer).set_model(load_model(tiny_model_file), str(tiny_model_file))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    assert isinstance(widget, fw.FineTuneWidget)
    assert widget.session is session_for(viewer)
    widget.budget_spin.setValue(0)  # steps only: the same work on every machine
    widget.options.steps_spin.setValue(6)
    widget.options.patch_spin.setValue(32)
    widget.options.batch_spin.setValue(2)
    widget.options.validate_spin.setValue(3)
    widget.options.validation_spin.setValue(0)
    return viewer, widget


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Messages the widget shows with napari's show_error."""
    shown: list[str] = []
    monkeypatch.setattr(fw, "show_error", shown.append)
    return shown


def add_pair(viewer, nuclei_crop, labels=None, name="nuclei"):
    """The crop as an image layer (with a scale) and a labels layer (ground truth by default)."""
    image, truth = nuclei_crop
    image_layer = viewer.add_image(image, name=name, scale=(0.5, 0.5), translate=(3.0, 4.0))
    labels_layer = viewer.add_labels(
        truth.copy() if labels is None else labels, name=f"{name} labels", scale=(0.5, 0.5), translate=(3.0, 4.0)
    )
    return image_layer, labels_layer


def run_finetune(qtbot, widget) -> None:
    """Click Fine-tune and wait until the job is over (its result handled)."""
    assert widget.finetune_button.isEnabled(), widget.finetune_button.toolTip()
    widget.finetune_button.click()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.network.state_dict().items()}


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_result_is_a_new_model_used_only_after_accept(qtbot, viewer_widget, nuclei_crop, tmp_path, errors):
    viewer, widget = viewer_widget
    _image, labels = add_pair(viewer, nuclei_crop)
    start = widget.session.model
    start_weights = weights(start)
    labels_before = labels.data.tobytes()
    assert unwrap_proxy(widget.pairs.rows[0].labels) is unwrap_proxy(labels)

    run_finetune(qtbot, widget)

    result = widget.result
    assert errors == []
    assert result is not None and result.steps_done == 6 and not result.stopped
    assert result.model is not start
    assert not same_weights(weights(result.model), start_weights)
    assert widget.session.model is start and same_weights(weights(start), start_weights)
    assert [p[0] for p in widget.plot.points] == [1, 2, 3, 4, 5, 6]
    assert all(p[1] is not None and np.isfinite(p[1]) for p in widget.plot.points)
    assert labels.data.tobytes() == labels_before
    # the preview is hidden when training ends and removed when the user decides
    assert not [layer for layer in viewer.layers if "preview" in layer.name and layer.visible]
    assert widget.accept_button.isEnabled() and widget.discard_button.isEnabled()
    assert widget.finetune_button.isEnabled()

    widget.accept_button.click()
    assert widget.session.model is result.model
    assert widget.session.previous_model is start
    assert not widget.accept_button.isEnabled()
    assert widget.revert_button.isEnabled()

    widget.revert_button.click()
    assert widget.session.model is start
    assert same_weights(weights(widget.session.model), start_weights)

    # saving: a missing folder and a full disk are notifications, nothing is written or lost
    missing = tmp_path / "missing" / "tuned.unet.safetensors"
    assert widget.save_model_to(missing) is None
    assert not missing.exists() and not missing.parent.exists()
    assert len(errors) == 1 and "does not exist" in errors[0]

    def full_disk(*_args, **_kwargs):
        raise OutputError("the disk is full; nothing was written")

    real_save = fw.save_model
    fw.save_model = full_disk
    try:
        assert widget.save_model_to(tmp_path / "full.unet.safetensors") is None
    finally:
        fw.save_model = real_save
    assert len(errors) == 2 and "disk is full" in errors[1]
    assert not list(tmp_path.glob("full*"))
    assert widget.save_button.isEnabled()

    path = widget.save_model_to(tmp_path / "tuned")
    assert path == tmp_path / "tuned.unet.safetensors"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tuned")] == ["tuned.unet.safetensors"]
    loaded = load_model(path)
    assert same_weights(weights(loaded), weights(result.model))
    assert loaded.description.name == "tiny test model (fine-tuned)"
    assert loaded.description.training_history[-1]["kind"] == "fine-tune"


def test_discard_keeps_the_model(qtbot, viewer_widget, nuclei_crop):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    start = widget.session.model
    run_finetune(qtbot, widget)
    widget.discard_button.click()
    assert widget.session.model is start
    assert not widget.accept_button.isEnabled()
    assert not widget.save_button.isEnabled()
    assert "Discarded" in widget.status_label.text()


def test_stop_ends_early_and_still_gives_a_result(qtbot, viewer_widget, nuclei_crop, monkeypatch):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    widget.options.steps_spin.setValue(500)
    gate = Gate(fj.train_job)
    monkeypatch.setattr(fj, "train_job", gate.job)
    widget.finetune_button.click()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT_MS)

    assert not widget.finetune_button.isEnabled()
    assert "running" in widget.finetune_button.toolTip()
    assert widget.stop_button.isEnabled()
    widget.stop_button.click()
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert widget.result is not None and widget.result.stopped
    assert widget.result.steps_done < 5
    if widget.result.steps_done:
        assert widget.accept_button.isEnabled()
        assert "stopped" in widget.status_label.text()
    else:  # stopped at the validation before training: nothing was trained, nothing to accept
        assert not widget.accept_button.isEnabled()
        assert "unchanged" in widget.status_label.text()


def test_scribbles_with_validation_show_before_and_after(qtbot, viewer_widget, nuclei_crop):
    viewer, widget = viewer_widget
    _image, truth = nuclei_crop
    scribbles = np.zeros(truth.shape, np.uint8)
    scribbles[::6][truth[::6] == 0] = 1  # background strokes every 6th row
    scribbles[:, ::9][truth[:, ::9] > 0] = 2  # interior strokes every 9th column
    add_pair(viewer, nuclei_crop, labels=scribbles, name="scribbled")
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("scribbles"))
    assert "1 = background" in widget.mode_hint.text() and "1 = background" in widget.mode_combo.toolTip()
    widget.options.validation_spin.setValue(25)
    # no mistake weight: the untrained model gets every stroke wrong, and corrections are never held back
    widget.options.mistake_spin.setValue(1.0)

    run_finetune(qtbot, widget)

    result = widget.result
    assert result.metric_name == "mean IoU" and result.baseline_metric is not None
    assert widget.plot.points[0] == (0, None, pytest.approx(result.baseline_metric))
    assert [p[0] for p in widget.plot.points if p[2] is not None] == [0, 3, 6]
    text = widget.metric_label.text()
    assert text == result.verdict.summary()
    assert f"mean IoU {result.baseline_metric:.3f} → " in text
    assert widget.warning_label.isVisibleTo(widget) == bool(result.verdict.warning() or result.warnings)


def test_worse_result_is_flagged(viewer_widget):
    _viewer, widget = viewer_widget
    from napari_unet.core.training.verdict import Verdict

    result = fj.TrainingResult(
        model=widget.session.model,
        baseline_metric=0.61,
        best_metric=0.61,
        metric_name="F1@0.5",
        steps_done=3,
        stopped=False,
        seconds=1.0,
        verdict=Verdict("worse", "F1@0.5", 0.61, 0.61, 23, worst=0.5),
    )
    widget._show_metrics(result)
    assert widget.metric_label.text().startswith("F1@0.5 0.610 → 0.500 at best on 23 held-back objects")
    assert widget.warning_label.isVisibleTo(widget)
    assert "worse" in widget.warning_label.text() and "Discard" in widget.warning_label.text()


@pytest.mark.parametrize(("top_value", "message"), [(0, "nothing is annotated"), (7, "must lie in 0..3")])
def test_unusable_scribbles_are_an_error_and_change_nothing(
    qtbot, viewer_widget, nuclei_crop, errors, top_value, message
):
    viewer, widget = viewer_widget
    scribbles = np.zeros((128, 128), np.uint8)
    scribbles[10:20, 10:20] = top_value
    add_pair(viewer, nuclei_crop, labels=scribbles)
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("scribbles"))
    start = widget.session.model
    layers_before = [(layer.name, layer.data.tobytes()) for layer in viewer.layers]

    run_finetune(qtbot, widget)

    assert len(errors) == 1 and message in errors[0] and "nuclei" in errors[0]
    assert [(layer.name, layer.data.tobytes()) for layer in viewer.layers] == layers_before
    assert widget.session.model is start
    assert widget.result is None
    assert not widget.accept_button.isEnabled()
    assert widget.status_label.text().startswith("Failed")


def test_labels_of_the_wrong_shape_are_refused(viewer_widget, nuclei_crop, errors):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    small = viewer.add_labels(np.ones((64, 64), np.uint8), name="small")
    widget.pairs.rows[0].labels_combo.setCurrentText("small")
    assert unwrap_proxy(widget.pairs.rows[0].labels) is unwrap_proxy(small)

    widget.finetune_button.click()

    assert widget.worker is None and not widget.is_running
    assert len(errors) == 1 and "(64, 64)" in errors[0] and "(128, 128)" in errors[0]


def test_divergence_is_an_error_and_keeps_the_model(qtbot, viewer_widget, nuclei_crop, monkeypatch, errors):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    start = widget.session.model

    from napari_unet.core.errors import UserError

    class Diverged(UserError, FloatingPointError):
        """The user-facing divergence error (core/training/loop.py raises a plain FloatingPointError so far)."""

    def diverging(*_args, **_kwargs):
        raise Diverged("training diverged (the loss became NaN or Inf); lower the learning rate")
        yield  # a generator, like train_job

    monkeypatch.setattr(fj, "train_job", diverging)
    run_finetune(qtbot, widget)
    assert len(errors) == 1 and "diverged" in errors[0]
    assert widget.session.model is start and widget.result is None


def test_preview_shows_the_plane_in_view_and_goes_away(qtbot, viewer_widget, nuclei_crop, monkeypatch):
    viewer, widget = viewer_widget
    image, truth = nuclei_crop
    stack = np.stack([image, image[::-1]])
    geometry = {"scale": (2.0, 0.5, 0.5), "translate": (0.0, 3.0, 4.0)}
    viewer.add_image(stack, name="stack", **geometry)
    painted = viewer.add_labels(np.stack([truth, np.zeros_like(truth)]), name="stack labels", **geometry)
    viewer.layers.selection.active = painted
    viewer.dims.set_current_step(0, 1)  # training uses plane 0 (the annotated one), the preview shows plane 1
    monkeypatch.setattr(fw, "PREVIEW_SECONDS", 0.0)
    widget.options.steps_spin.setValue(2)
    widget.options.mistake_spin.setValue(1.0)
    widget.keep_preview_check.setChecked(True)
    run_finetune(qtbot, widget)

    (preview,) = [layer for layer in viewer.layers if "preview" in layer.name]
    assert preview.name == "stack [U-Net preview]"
    assert preview.data.shape == stack.shape
    np.testing.assert_allclose(preview.scale, geometry["scale"])
    np.testing.assert_allclose(preview.translate, geometry["translate"])
    assert (preview.data[0] == 0).all() and preview.data[1].any()
    assert all(row.labels_combo.findText(preview.name) < 0 for row in widget.pairs.rows)
    assert unwrap_proxy(viewer.layers.selection.active) is unwrap_proxy(painted)  # painting goes on there
    assert widget.result is not None

    widget.keep_preview_check.setChecked(False)
    run_finetune(qtbot, widget)
    # the same layer was reused (no layer added while training), then hidden at the end
    (again,) = [layer for layer in viewer.layers if "preview" in layer.name]
    assert again is preview and not again.visible
    widget.discard_button.click()
    assert not [layer for layer in viewer.layers if "preview" in layer.name]


def test_fine_tune_button_says_what_is_missing(make_napari_viewer, nuclei_crop):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    if widget.session.model is None:
        assert not widget.finetune_button.isEnabled()
        assert "model" in widget.finetune_button.toolTip()
        from napari_unet.core import new_model

        widget.session.set_model(new_model(depth=2, base_features=4), "fresh (unsaved)")
    assert not widget.finetune_button.isEnabled()
    assert "image layer" in widget.finetune_button.toolTip()
    image = viewer.add_image(nuclei_crop[0], name="nuclei")
    assert not widget.finetune_button.isEnabled()
    assert "labels layer" in widget.finetune_button.toolTip()
    viewer.add_labels(np.zeros((128, 128), np.uint8), name="painted")
    assert widget.finetune_button.isEnabled()
    assert widget.pairs.rows[0].labels.name == "painted"
    assert not widget.revert_button.isEnabled() or widget.session.can_revert

    second = widget.pairs.add_pair()
    assert second.image is not None and len(widget.pairs.rows) == 2
    widget.pairs.remove_pair(second)
    assert len(widget.pairs.rows) == 1
    viewer.layers.remove(image)
    assert not widget.finetune_button.isEnabled()


def test_finetune_job_runs_without_a_gui(tiny_model, nuclei_crop):
    image, truth = nuclei_crop
    request = fj.FineTuneRequest(
        model=tiny_model,
        images=[fj.AnnotatedImage("crop", image, truth.copy())],
        settings=fj.TrainingSettings(steps=3, patch_size=32, batch_size=2, mistake_weight=1.0),
        validation_fraction=0.0,
    )
    from napari_unet.core.inference.layout import infer_layout

    preview = fj.plane_preview(fj.PreviewSource(image, infer_layout(image.shape, in_channels=1)), every=0.0)
    job = fj.finetune_job(request, stop=threading.Event(), preview=preview)
    reports = []
    while True:
        try:
            reports.append(next(job))
        except StopIteration as done:
            result = done.value
            break
    previews = [r for r in reports if isinstance(r, fj.PreviewUpdate)]
    steps = [r for r in reports if not isinstance(r, fj.PreviewUpdate) and r.stage == "train"]
    assert [r.done for r in steps] == [1, 2, 3]
    assert all("model" not in r.data for r in steps)  # the live network never leaves the worker
    assert [p.step for p in previews] == [1, 2, 3] and previews[0].labels.shape == image.shape
    assert result.steps_done == 3 and result.model is not tiny_model


def test_no_preview_is_predicted_once_stop_is_set(tiny_model, nuclei_crop):
    """A preview prediction can take a second: after Stop the job must end, not preview."""
    image, truth = nuclei_crop
    request = fj.FineTuneRequest(
        model=tiny_model,
        images=[fj.AnnotatedImage("crop", image, truth.copy())],
        settings=fj.TrainingSettings(steps=50, patch_size=32, batch_size=2, mistake_weight=1.0),
        validation_fraction=0.0,
    )
    from napari_unet.core.inference.layout import infer_layout

    stop = threading.Event()
    source = fj.PreviewSource(image, infer_layout(image.shape, in_channels=1))
    job = fj.finetune_job(request, stop=stop, preview=fj.plane_preview(source, every=0.0, stop=stop))
    report = next(job)
    while isinstance(report, fj.PreviewUpdate) or report.stage != "train":
        report = next(job)
    stop.set()
    after = []
    while True:
        try:
            after.append(next(job))
        except StopIteration as done:
            result = done.value
            break
    assert not [r for r in after if isinstance(r, fj.PreviewUpdate)]
    assert result.stopped and result.steps_done == 1


def test_a_shapes_layer_marks_the_reviewed_region(viewer_widget, nuclei_crop, monkeypatch, qtbot):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)  # image pixels are 0.5 world units, shifted by (3, 4)
    # a rectangle in world coordinates over image pixels rows 10..49, columns 20..59
    shapes = viewer.add_shapes(
        [np.array([[8.0, 14.0], [8.0, 34.0], [28.0, 34.0], [28.0, 14.0]])], shape_type="rectangle", name="checked"
    )
    assert widget.reviewed_combo.count() == 2
    widget.reviewed_combo.setCurrentIndex(1)
    assert unwrap_proxy(widget.reviewed_layer()) is unwrap_proxy(shapes)
    seen = []
    original = fj.samples_from_arrays
    monkeypatch.setattr(fj, "samples_from_arrays", lambda *a, **k: seen.append(k["reviewed"]) or original(*a, **k))
    run_finetune(qtbot, widget)
    (mask,) = seen
    assert mask.shape == nuclei_crop[1].shape
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 50, 20, 60)
    assert widget.result is not None


def test_a_reviewed_region_off_the_image_is_an_error(viewer_widget, nuclei_crop, errors):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    viewer.add_shapes(
        [np.array([[900.0, 900.0], [900.0, 950.0], [950.0, 950.0], [950.0, 900.0]])], shape_type="rectangle"
    )
    widget.reviewed_combo.setCurrentIndex(1)
    assert widget.fine_tune() is None
    assert errors and "no shape" in errors[0]


def test_reviewed_list_follows_shapes_layers_added_before_the_widget(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    shapes = viewer.add_shapes(name="before")
    session_for(viewer).set_model(load_model(tiny_model_file), str(tiny_model_file))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    assert widget.reviewed_combo.itemText(1) == "Inside shapes of 'before'"
    shapes.name = "renamed"
    assert widget.reviewed_combo.itemText(1) == "Inside shapes of 'renamed'"
    viewer.layers.remove(shapes)
    assert widget.reviewed_combo.count() == 1


# --------------------------------------------------------------------------- closing, faults while saving


def _start_paused(qtbot, widget, monkeypatch) -> Gate:
    """Click Fine-tune with training paused after its first report."""
    widget.options.steps_spin.setValue(500)
    gate = Gate(fj.train_job)
    monkeypatch.setattr(fj, "train_job", gate.job)
    widget.finetune_button.click()
    qtbot.waitUntil(gate.reached.is_set, timeout=TIMEOUT_MS)
    assert widget.is_running
    return gate


def test_closing_the_dock_ends_training_and_changes_nothing(qtbot, viewer_widget, nuclei_crop, monkeypatch):
    from job_gates import close_dock_of

    viewer, widget = viewer_widget
    _image, labels = add_pair(viewer, nuclei_crop)
    start = widget.session.model
    start_weights = weights(start)
    labels_before = labels.data.tobytes()
    names = [layer.name for layer in viewer.layers]
    gate = _start_paused(qtbot, widget, monkeypatch)
    job = widget._job

    close_dock_of(viewer, widget)

    assert job.stop.is_set() and widget.worker.abort_requested
    gate.release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert widget.result is None  # nobody can Accept it: dropped
    assert widget.session.model is start and same_weights(weights(start), start_weights)
    assert labels.data.tobytes() == labels_before
    assert [layer.name for layer in viewer.layers] == names


def test_closing_the_viewer_while_training_raises_nothing(qtbot, viewer_widget, nuclei_crop, monkeypatch):
    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    start = widget.session.model
    start_weights = weights(start)
    gate = _start_paused(qtbot, widget, monkeypatch)
    worker = widget.worker

    viewer.close()
    qtbot.wait(50)  # the window is deleted later: that stops the job
    assert worker.abort_requested
    gate.release.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)
    qtbot.wait(50)  # let queued signals of the worker arrive (pytest-qt fails on exceptions in them)
    assert len(viewer.layers) == 0
    assert same_weights(weights(start), start_weights)


def test_full_disk_while_saving_keeps_the_previous_model_file(
    qtbot, viewer_widget, nuclei_crop, tmp_path, monkeypatch, errors
):
    import errno

    from napari_unet.core import save_model
    from napari_unet.core.io import atomic

    viewer, widget = viewer_widget
    add_pair(viewer, nuclei_crop)
    run_finetune(qtbot, widget)
    previous = save_model(widget.session.model, tmp_path / "tuned.unet.safetensors")
    before = previous.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "fsync", no_space)
        assert widget.save_model_to(previous) is None

    assert len(errors) == 1 and "disk is full" in errors[0]
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".tuned", "tuned"))) == [previous.name]
    assert widget.save_button.isEnabled()  # still in memory: save it elsewhere


def test_only_one_painted_class_is_a_notice_and_training_goes_on(
    qtbot, viewer_widget, nuclei_crop, monkeypatch, errors
):
    viewer, widget = viewer_widget
    infos: list[str] = []
    monkeypatch.setattr(fw, "show_info", infos.append)
    _image, truth = nuclei_crop
    scribbles = np.zeros(truth.shape, np.uint8)
    scribbles[::6][truth[::6] == 0] = 1  # background strokes only
    add_pair(viewer, nuclei_crop, labels=scribbles, name="scribbled")
    widget.mode_combo.setCurrentIndex(widget.mode_combo.findData("scribbles"))
    start = widget.session.model

    run_finetune(qtbot, widget)

    assert errors == []
    assert len(infos) == 1 and "Only the class 'background' is annotated" in infos[0]
    assert widget.result is not None and widget.session.model is start


def test_the_widget_and_the_command_line_train_the_same_weights(
    qtbot, viewer_widget, nuclei_crop, tmp_path, tiny_model_file, monkeypatch
):
    """Same image, labels, model, recipe and seed: the widget and ``napari-unet train`` give identical weights."""
    import itertools

    import tifffile

    from napari_unet.cli import main
    from napari_unet.core.training import loop

    # every validation is better than the one before, so both keep their last weights
    # (the tiny untrained model scores 0 throughout, which would keep the starting weights)
    scores = itertools.count()
    monkeypatch.setattr(loop, "evaluate", lambda *args, **kwargs: float(next(scores)))
    monkeypatch.setattr(fw, "PREVIEW_SECONDS", 1e9)  # no preview: it would only cost time
    viewer, widget = viewer_widget
    image, truth = nuclei_crop
    add_pair(viewer, nuclei_crop, name="a.tif")
    widget.options.steps_spin.setValue(3)
    widget.options.validate_spin.setValue(25)  # the command line's defaults
    widget.options.validation_spin.setValue(20)
    widget.options.device_combo.setCurrentIndex(widget.options.device_combo.findData("cpu"))
    run_finetune(qtbot, widget)
    assert widget.result is not None and widget.result.steps_done == 3

    for folder, data in (("img", image), ("lab", truth)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", data)
    out = tmp_path / "cli.unet.safetensors"
    args = ["train", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "--from", str(tiny_model_file)]
    args += ["-o", str(out), "--steps", "3", "--patch-size", "32", "--batch-size", "2", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    cli = load_model(out)
    assert (
        cli.description.training_history[-1]["settings"]
        == widget.result.model.description.training_history[-1]["settings"]
    )
    assert same_weights(weights(widget.result.model), weights(cli))
    assert not same_weights(weights(cli), weights(load_model(tiny_model_file)))  # it trained
