"""One job lifecycle for every widget: worker thread, progress bar, Cancel, close guard, outcome.

A widget hands :meth:`JobRunner.start` a core-style job (a generator that
yields reports and returns a result) and :class:`JobHandlers`. The runner
runs the job in a napari ``thread_worker``, shows a napari ``progress`` bar,
passes every yielded report to the widget on the GUI thread, stops the job
when the widget is closed (dock closed, viewer closed) or :meth:`JobRunner.cancel`
is called, and ends with exactly one outcome:

* ``done(result)``: the job returned;
* ``cancelled()``: the job was stopped before it returned;
* ``failed(error)``: the job raised a :class:`~napari_unet.core.errors.UserError`
  (something the user can act on; the widget shows its message);
* ``crashed(error)``: the job raised anything else, a bug. The runner logs it
  with its traceback, reports it through napari's error notifications and
  writes an "unexpected error" line in the widget's status label; it is never
  shown as an input mistake.

Then ``ended()`` runs (also after the widget was closed, when no outcome is
delivered: a closed widget must touch neither itself nor the viewer).

Errors are caught inside the worker thread: superqt's worker neither emits
``finished`` nor ``errored`` for a ``RuntimeError`` raised by a generator, so
an uncaught one would leave the widget "running" for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, thread_worker
from napari.utils import progress
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QLabel, QWidget

from napari_unet._widgets.forms.lifetime import JobGuard, left_its_dock
from napari_unet._widgets.forms.plain_text import literal_tip
from napari_unet.core.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["JobHandlers", "JobRunner", "RunsJobs", "progress_fraction", "report_unexpected"]


def _nothing(*_: Any) -> None:
    return None


def progress_fraction(report: Any) -> float | None:
    """The fraction done of a :class:`~napari_unet.core.Progress` report; None for anything else."""
    fraction = getattr(report, "fraction", None)
    return float(fraction) if isinstance(fraction, (int, float)) else None


def report_unexpected(error: BaseException) -> None:
    """Log ``error`` with its traceback and show it with napari's error notification (a bug, not a user mistake)."""
    log.error("unexpected error in a napari-unet job", exc_info=(type(error), error, error.__traceback__))
    from napari.utils.notifications import notification_manager

    notification_manager.receive_error(type(error), error, error.__traceback__)


def unexpected_text(error: BaseException) -> str:
    """The status line of a job that crashed."""
    return (
        f"Failed: unexpected error ({type(error).__name__}: {error}). This is a bug in napari-unet, "
        "not a problem with your data; the details are in napari's error notification and the log."
    )


@dataclass(frozen=True)
class JobHandlers:
    """What a widget does with its job, all on the GUI thread.

    Attributes
    ----------
    done : callable
        Called with the job's result.
    failed : callable
        Called with the :class:`UserError` the job raised; shows its message.
    cancelled : callable
        Called when the job was stopped before it returned.
    crashed : callable
        Called with any other exception, after the runner reported it.
    yielded : callable
        Called with each report the job yields, before the progress bar moves.
    ended : callable
        Called last, once per job, also when the widget was closed.
    """

    done: Callable[[Any], None]
    failed: Callable[[UserError], None]
    cancelled: Callable[[], None] = _nothing
    crashed: Callable[[Exception], None] = _nothing
    yielded: Callable[[Any], None] = _nothing
    ended: Callable[[], None] = _nothing


@dataclass(frozen=True)
class _Outcome:
    """What the job thread hands back: a result, a user error or a crash."""

    result: Any = None
    error: Exception | None = None


@thread_worker
def _job_worker(
    job: Generator[Any, Any, Any] | Callable[[], Generator[Any, Any, Any]],
) -> Generator[Any, Any, _Outcome]:
    """Run ``job`` (or the job it makes) in a worker thread; its errors come back as values (see the module notes)."""
    try:
        return _Outcome(result=(yield from (job() if callable(job) else job)))
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and crashes on the GUI thread
        return _Outcome(error=exc)


class _DockWatch(QObject):
    """Closes a guard when its widget is taken out of its dock (napari closes a dock that way)."""

    def __init__(self, widget: QWidget, guard: JobGuard) -> None:
        super().__init__(widget)
        self._guard = guard
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if isinstance(watched, QWidget) and left_its_dock(watched, event):
            self._guard.close()
        return False


class _Run:
    """One started job: its handlers, progress bar and outcome."""

    def __init__(self, handlers: JobHandlers, pbar: progress, total: int, fraction: Callable[[Any], float | None]):
        self.handlers = handlers
        self.pbar = pbar
        self.total = total
        self.fraction = fraction
        self.outcome: _Outcome | None = None


class JobRunner:
    """Runs one job at a time for ``widget`` and guards the widget's closing.

    Parameters
    ----------
    widget : QWidget
        The widget whose jobs these are; closing its dock or deleting it stops
        the running job.
    status : QLabel, optional
        Where the "unexpected error" line of a crashed job is written.

    Attributes
    ----------
    worker : napari.qt.threading.GeneratorWorker or None
        The worker of the last job started (still set after it finished).
    """

    def __init__(self, widget: QWidget, *, status: QLabel | None = None) -> None:
        self.worker: GeneratorWorker | None = None
        self._status = status
        self._run: _Run | None = None
        self._cancelling = False
        self._guard = JobGuard()
        self._guard.watch(widget)
        self._watch = _DockWatch(widget, self._guard)

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the job's outcome was handled."""
        return self._run is not None

    @property
    def closed(self) -> bool:
        """True once the widget was closed or deleted: it must start nothing and show nothing."""
        return self._guard.closed

    @property
    def cancelling(self) -> bool:
        """True once :meth:`cancel` was called for the running job."""
        return self._cancelling and self.running

    def start(
        self,
        job: Generator[Any, Any, Any] | Callable[[], Generator[Any, Any, Any]],
        handlers: JobHandlers,
        *,
        desc: str,
        total: int = 100,
        fraction: Callable[[Any], float | None] = progress_fraction,
        stop: Callable[[], None] | None = None,
    ) -> GeneratorWorker | None:
        """Run ``job`` in a worker thread; returns its worker (None if a job runs or the widget was closed).

        Parameters
        ----------
        job : generator or callable
            A core-style job, or a function of no arguments that makes it (called
            in the worker thread, so that what it raises is an outcome too).
        handlers : JobHandlers
            The widget's callbacks.
        desc : str
            Text of the progress bar.
        total : int
            Steps of the progress bar.
        fraction : callable
            Fraction done (0 to 1) of a yielded report, or None to leave the bar.
        stop : callable, optional
            Called besides stopping the worker when the widget is closed (e.g.
            to end training at its next step).
        """
        if self.running or self.closed:
            return None
        worker = _job_worker(job)
        run = _Run(
            handlers, progress(total=total, desc=literal_tip(desc)), total, fraction
        )  # napari shows it in a label
        worker.yielded.connect(lambda report: self._on_yielded(run, report))
        worker.returned.connect(lambda outcome: setattr(run, "outcome", outcome))
        worker.finished.connect(lambda: self._on_finished(run))
        self.worker, self._run, self._cancelling = worker, run, False
        self._guard.started(_stopper(worker, stop))
        worker.start()
        return worker

    def cancel(self) -> bool:
        """Stop the running job at its next step; True if there was one to stop."""
        if self.worker is None or not self.running or self._cancelling:
            return False
        self._cancelling = True
        self.worker.quit()
        return True

    def _on_yielded(self, run: _Run, report: Any) -> None:
        if self.closed or run.outcome is not None or self._run is not run:
            # napari's progress bar can process events while it updates, so a report
            # may arrive after the outcome: it must not undo what the outcome showed
            return
        run.handlers.yielded(report)
        fraction = run.fraction(report)
        if fraction is not None:
            value = round(run.total * min(max(fraction, 0.0), 1.0))
            if value > run.pbar.n:
                run.pbar.update(value - run.pbar.n)

    def _on_finished(self, run: _Run) -> None:
        run.pbar.close()
        if self._run is run:
            self._run = None
            self._guard.finished()
        outcome = run.outcome or _Outcome()
        if isinstance(outcome.error, Exception) and not isinstance(outcome.error, UserError):
            report_unexpected(outcome.error)
        if not self.closed:
            self._deliver(run.handlers, outcome, stopped=run.outcome is None)
        run.handlers.ended()

    def _deliver(self, handlers: JobHandlers, outcome: _Outcome, *, stopped: bool) -> None:
        """Call exactly one outcome handler."""
        error = outcome.error
        if stopped:
            handlers.cancelled()
        elif isinstance(error, UserError):
            handlers.failed(error)
        elif error is not None:
            if self._status is not None:
                self._status.setText(unexpected_text(error))
            handlers.crashed(error)
        else:
            handlers.done(outcome.result)


class RunsJobs:
    """Mixin for a widget with a :class:`JobRunner` in ``self._runner``: its job's public state."""

    _runner: JobRunner

    @property
    def is_running(self) -> bool:
        """True while the widget's job runs."""
        return self._runner.running

    @property
    def worker(self) -> GeneratorWorker | None:
        """The worker of the last job started (still set after it finished)."""
        return self._runner.worker


def _stopper(worker: GeneratorWorker, stop: Callable[[], None] | None) -> Callable[[], None]:
    """Stop ``worker`` (and call ``stop``) when the widget closes; holds no reference to the widget."""

    def close() -> None:
        if stop is not None:
            stop()
        worker.quit()

    return close
