"""The one job runner of the widgets: outcomes, Cancel, closing, user errors versus bugs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._widgets import export_widget as ew  # noqa: E402
from napari_unet._widgets import segment_widget as sw  # noqa: E402
from napari_unet._widgets.forms import job_runner as jr  # noqa: E402
from napari_unet._widgets.layers.session import session_for  # noqa: E402
from napari_unet.core import Progress, load_model  # noqa: E402
from napari_unet.core.errors import UserError  # noqa: E402
from napari_unet.core.inference.predict import OutOfMemoryError  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30_000
WIDGETS = Path(jr.__file__).resolve().parents[1]


class Recorder:
    """JobHandlers that write down what they were called with, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def handlers(self) -> jr.JobHandlers:
        return jr.JobHandlers(
            done=lambda result: self.calls.append(("done", result)),
            failed=lambda error: self.calls.append(("failed", error)),
            cancelled=lambda: self.calls.append(("cancelled", None)),
            crashed=lambda error: self.calls.append(("crashed", error)),
            yielded=lambda report: self.calls.append(("yielded", report)),
            ended=lambda: self.calls.append(("ended", None)),
        )

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


@pytest.fixture
def host(qtbot):
    """A widget inside a parent (as in a dock), with a status label, and its runner."""
    from qtpy.QtWidgets import QLabel, QWidget

    parent = QWidget()
    qtbot.addWidget(parent)
    widget = QWidget(parent)
    status = QLabel(widget)
    yield widget, status, jr.JobRunner(widget, status=status)  # the parent lives (holds the widget) until the end


@pytest.fixture
def reported(monkeypatch) -> list[BaseException]:
    """Errors the runner hands to napari's error notifications."""
    from napari.utils.notifications import notification_manager

    seen: list[BaseException] = []
    monkeypatch.setattr(notification_manager, "receive_error", lambda kind, error, tb: seen.append(error))
    return seen


def wait_over(qtbot, runner) -> None:
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)


def test_a_job_that_yields_then_returns_gives_its_reports_then_done(qtbot, host, reported):
    _widget, _status, runner = host
    reports = [Progress("tiles", done=i, total=2, message=f"tile {i}") for i in (1, 2)]

    def job():
        yield from reports
        return "the result"

    recorder = Recorder()
    worker = runner.start(job(), recorder.handlers(), desc="test job")
    assert worker is runner.worker and runner.running
    wait_over(qtbot, runner)

    assert recorder.calls == [
        ("yielded", reports[0]),
        ("yielded", reports[1]),
        ("done", "the result"),
        ("ended", None),
    ]
    assert reported == []


def test_a_callable_is_called_on_start_to_make_the_job(qtbot, host):
    _widget, _status, runner = host
    made = []

    def make():
        made.append(threading.current_thread() is threading.main_thread())
        return (yield Progress("tiles", done=1, total=1)) or 7

    recorder = Recorder()
    runner.start(make, recorder.handlers(), desc="test job")
    wait_over(qtbot, runner)
    assert made == [False]  # a generator function: its body runs in the worker thread
    assert recorder.calls[-2:] == [("done", 7), ("ended", None)]


def test_what_the_job_maker_raises_is_an_outcome_too(qtbot, host, reported):
    _widget, _status, runner = host

    def make():  # a plain function that refuses before it makes a generator
        raise OutOfMemoryError("not enough memory for the result; choose fewer planes")

    recorder = Recorder()
    assert runner.start(make, recorder.handlers(), desc="test job") is not None
    wait_over(qtbot, runner)
    assert recorder.kinds() == ["failed", "ended"] and reported == []


def _held_job(reached: threading.Event, release: threading.Event):
    yield Progress("tiles", done=0, total=2)
    reached.set()
    release.wait(10)
    yield Progress("tiles", done=1, total=2)
    return "finished anyway"


def test_a_cancelled_job_ends_with_cancelled_only(qtbot, host):
    _widget, _status, runner = host
    reached, release = threading.Event(), threading.Event()
    recorder = Recorder()
    runner.start(_held_job(reached, release), recorder.handlers(), desc="test job")
    assert reached.wait(10)

    assert runner.cancel() and runner.cancelling
    assert not runner.cancel()  # once is enough
    release.set()
    wait_over(qtbot, runner)

    assert runner.worker.abort_requested
    assert recorder.kinds()[-2:] == ["cancelled", "ended"]
    assert "done" not in recorder.kinds()
    assert not runner.cancelling


def test_a_second_job_is_refused_while_one_runs(qtbot, host):
    _widget, _status, runner = host
    reached, release = threading.Event(), threading.Event()
    first = runner.start(_held_job(reached, release), Recorder().handlers(), desc="first")
    assert reached.wait(10)
    assert runner.start(_held_job(threading.Event(), release), Recorder().handlers(), desc="second") is None
    assert runner.worker is first
    release.set()
    wait_over(qtbot, runner)


def test_closing_the_dock_stops_the_job_and_delivers_no_outcome(qtbot, host):
    widget, _status, runner = host
    reached, release = threading.Event(), threading.Event()
    stopped = []
    recorder = Recorder()
    runner.start(_held_job(reached, release), recorder.handlers(), desc="test job", stop=lambda: stopped.append(True))
    assert reached.wait(10)
    qtbot.waitUntil(lambda: recorder.kinds() == ["yielded"], timeout=TIMEOUT_MS)

    widget.setParent(None)  # napari closes a dock by taking the widget out of it

    assert runner.closed and stopped == [True] and runner.worker.abort_requested
    release.set()
    wait_over(qtbot, runner)
    assert recorder.kinds() == ["yielded", "ended"]  # the report before the close, then only the clean-up
    assert runner.start(_held_job(reached, release), recorder.handlers(), desc="again") is None
    widget.deleteLater()


def test_a_user_error_goes_to_failed_not_to_the_bug_report(qtbot, host, reported):
    _widget, status, runner = host

    def refusing():
        yield Progress("tiles", done=0, total=1)
        raise OutOfMemoryError("out of memory even with 64-pixel tiles; close other programs")

    recorder = Recorder()
    runner.start(refusing(), recorder.handlers(), desc="test job")
    wait_over(qtbot, runner)  # a RuntimeError subclass: superqt alone would never say "finished"

    kind, error = recorder.calls[-2]
    assert kind == "failed" and isinstance(error, UserError) and "64-pixel" in str(error)
    assert recorder.kinds()[-1] == "ended"
    assert reported == [] and status.text() == ""


def test_any_other_error_is_reported_as_a_bug_with_its_traceback(qtbot, host, reported, caplog):
    _widget, status, runner = host

    def broken():
        yield Progress("tiles", done=0, total=1)
        return len(None)  # a TypeError: a bug, whatever the input

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger=jr.__name__):
        runner.start(broken(), recorder.handlers(), desc="test job")
        wait_over(qtbot, runner)

    kind, error = recorder.calls[-2]
    assert kind == "crashed" and isinstance(error, TypeError)
    assert "failed" not in recorder.kinds()
    assert reported == [error]
    assert [record.exc_info[1] for record in caplog.records if record.exc_info] == [error]
    assert "unexpected error" in status.text() and "TypeError" in status.text()


# --------------------------------------------------------------------------- the widgets


@pytest.fixture
def segment(make_napari_viewer, tiny_model_file, monkeypatch):
    """A viewer with the Segment widget (tiny model), an image, and napari's notifications caught."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    assert widget.load_model_file(tiny_model_file)
    viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="image")
    shown: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in shown:
        monkeypatch.setattr(sw, f"show_{kind}", shown[kind].append)
    return viewer, widget, shown


def test_a_user_error_of_a_segment_job_is_shown_and_the_widget_stays_usable(qtbot, segment, monkeypatch, reported):
    viewer, widget, shown = segment
    real_job = sw.segment_job

    def refusing(*args, **kwargs):
        raise OutOfMemoryError("out of memory even with 64-pixel tiles; close other programs")
        yield

    monkeypatch.setattr(sw, "segment_job", refusing)
    widget.segment_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert shown["error"] == ["Cannot segment 'image': out of memory even with 64-pixel tiles; close other programs"]
    assert widget.status_label.text().startswith("Failed: out of memory")
    assert reported == []
    assert widget.segment_button.isEnabled()
    monkeypatch.setattr(sw, "segment_job", real_job)
    widget.segment_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["image", "image [U-Net]"]
    assert widget.status_label.text().startswith("Done")


def test_a_bug_in_a_segment_job_is_not_shown_as_an_input_mistake(qtbot, segment, monkeypatch, reported):
    viewer, widget, shown = segment

    def broken(*args, **kwargs):
        yield Progress("tiles", done=0, total=1)
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(sw, "segment_job", broken)
    widget.segment_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert shown["error"] == []  # no "Cannot segment 'image': ..." as if the image were at fault
    assert len(reported) == 1 and isinstance(reported[0], TypeError)
    assert "unexpected error" in widget.status_label.text() and "bug" in widget.status_label.text()
    assert [layer.name for layer in viewer.layers] == ["image"]
    assert widget.segment_button.isEnabled()


@pytest.fixture
def runner_starts(monkeypatch) -> list[tuple[jr.JobRunner, object]]:
    """Every (runner, worker) that JobRunner.start made."""
    started: list[tuple[jr.JobRunner, object]] = []
    real = jr.JobRunner.start

    def spy(self, job, handlers, **options):
        worker = real(self, job, handlers, **options)
        started.append((self, worker))
        return worker

    monkeypatch.setattr(jr.JobRunner, "start", spy)
    return started


def test_the_segment_widget_starts_its_jobs_with_the_runner(qtbot, segment, runner_starts):
    _viewer, widget, _shown = segment
    widget.segment_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert runner_starts == [(widget._runner, widget.worker)] and widget.worker is not None


def test_the_finetune_widget_starts_its_jobs_with_the_runner(
    qtbot, make_napari_viewer, tiny_model_file, nuclei_crop, runner_starts
):
    viewer = make_napari_viewer()
    session_for(viewer).set_model(load_model(tiny_model_file), str(tiny_model_file))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    widget.budget_spin.setValue(0)
    widget.options.steps_spin.setValue(2)
    widget.options.patch_spin.setValue(32)
    widget.options.validation_spin.setValue(0)
    image, truth = nuclei_crop
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth.copy(), name="nuclei labels")
    widget.finetune_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert runner_starts == [(widget._runner, widget.worker)] and widget.worker is not None
    assert widget.result is not None and widget.result.steps_done == 2


def test_the_export_widget_starts_its_jobs_with_the_runner(qtbot, make_napari_viewer, tmp_path, runner_starts):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Export")
    labels = viewer.add_labels(np.arange(16, dtype=np.uint8).reshape(4, 4), name="painted")
    widget.choose_layer(labels)
    widget.folder_edit.setText(str(tmp_path))
    worker = widget.export()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
    assert runner_starts == [(widget._runner, worker)] and worker is widget.worker is not None
    assert (tmp_path / "painted_labels.tif").is_file()
    assert isinstance(widget, ew.ExportWidget)


# --------------------------------------------------------------------------- one lifecycle in the source


def _sources() -> dict[str, str]:
    return {str(path.relative_to(WIDGETS)): path.read_text() for path in WIDGETS.rglob("*.py")}


def test_one_disconnect_helper_and_one_thread_worker_in_the_widgets_package():
    sources = _sources()
    assert [name for name, text in sources.items() if "def _disconnect(" in text] == ["forms/lifetime.py"]
    assert [name for name, text in sources.items() if "@thread_worker" in text] == ["forms/job_runner.py"]
    assert sorted(name for name, text in sources.items() if "left_its_dock(" in text) == [
        "forms/job_runner.py",
        "forms/lifetime.py",
    ]


def test_the_widgets_catch_user_errors_only_through_user_error():
    """No widget keeps its own tuple of exception classes that count as the user's mistakes."""
    for name, text in _sources().items():
        assert "_USER_ERRORS" not in text, name
        assert "except (ValueError" not in text and "except (OSError" not in text, name
