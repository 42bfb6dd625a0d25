"""Closing a widget stops its job: the dock's close button, or the viewer closing.

napari closes a dock by taking the widget out of it (``setParent(None)``),
and closing the viewer deletes the window with its docks. Neither stops a
``thread_worker`` by itself, and a job that finishes later would then touch
a deleted widget or add layers to a closed viewer. A :class:`JobGuard`
holds how to stop the running job; the widget's
:class:`~napari_unet._widgets.forms.job_runner.JobRunner` calls
:meth:`JobGuard.close` when the widget is taken out of its dock, and
:meth:`JobGuard.watch` makes the deletion of the widget call it too. Result
handlers check :attr:`JobGuard.closed` and then only release resources.
:func:`connect_for_life` connects a widget to a signal that outlives it
(the viewer's model session) until the widget is deleted.

The guard holds no reference to the widget, so connecting the widget's
``destroyed`` signal to it is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QWidget

log = logging.getLogger(__name__)


class JobGuard:
    """How to stop a widget's running job, and whether the widget was closed.

    Attributes
    ----------
    closed : bool
        True once the widget was closed or deleted; its job handlers must then
        touch neither the widget nor the viewer.
    """

    def __init__(self) -> None:
        self.closed = False
        self._stop: Callable[[], None] | None = None

    def watch(self, widget: QWidget) -> None:
        """Close the guard when ``widget`` is deleted (e.g. with the viewer's window)."""
        widget.destroyed.connect(self.close)

    def started(self, stop: Callable[[], None]) -> None:
        """A job started; ``stop`` ends it at its next step (it must not hold the widget)."""
        self._stop = stop

    def finished(self) -> None:
        """The job is over; there is nothing to stop any more."""
        self._stop = None

    @property
    def running(self) -> bool:
        """True while a started job has not finished."""
        return self._stop is not None

    def close(self, *_: Any) -> None:
        """The widget is gone: stop the running job (once) and mark the guard closed."""
        self.closed = True
        stop, self._stop = self._stop, None
        if stop is not None:
            log.info("widget closed while its job ran: stopping the job")
            stop()


def left_its_dock(widget: QWidget, event: QEvent) -> bool:
    """True if ``event`` says ``widget`` was just taken out of its dock (napari closed the dock)."""
    return event.type() == QEvent.Type.ParentChange and widget.parent() is None


def connect_for_life(widget: QWidget, signal: Any, slot: Callable[..., Any]) -> None:
    """Connect ``slot`` to ``signal`` (a psygnal signal) until ``widget`` is deleted.

    The signal may outlive the widget (e.g. it belongs to the viewer's model
    session); without the disconnection it would call into a deleted widget.
    """
    signal.connect(slot)
    widget.destroyed.connect(partial(_disconnect, signal, slot))


def _disconnect(signal: Any, slot: Callable[..., Any], *_: Any) -> None:
    signal.disconnect(slot)
