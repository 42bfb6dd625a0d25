"""Pausing a job generator in tests, to act while a widget's job is running."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Gate:
    """Wraps a job function so its jobs pause after their first progress report until released.

    Parameters
    ----------
    job_function : callable
        The generator function to wrap (e.g. ``segment_job``), taken before it is patched.
    """

    def __init__(self, job_function: Callable[..., Any]) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self._job = job_function

    def job(self, *args, **kwargs):
        inner = self._job(*args, **kwargs)
        first = next(inner)
        self.reached.set()
        yield first
        self.release.wait(20)
        return (yield from inner)


def close_dock_of(viewer, widget) -> None:
    """Click the close button of the dock that holds ``widget``, as a user closes a panel."""
    from qtpy.QtWidgets import QDockWidget

    docks = [dock for dock in viewer.window._qt_window.findChildren(QDockWidget) if dock.widget() is widget]
    assert len(docks) == 1, "the widget is not docked"
    docks[0].title.close_button.click()
    assert widget.parent() is None
