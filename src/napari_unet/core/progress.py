"""Progress reports of long jobs, and draining a job generator.

Long jobs (segmenting, training, exporting) are generators: they yield
:class:`Progress` objects between steps and *return* their result. Stopping
a job means not asking for the next step; a GUI does that with
``thread_worker.quit()``, a script with ``KeyboardInterrupt``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    Attributes
    ----------
    stage : str
        What is being done, e.g. ``"tiles"``, ``"instances"``, ``"train"``,
        ``"notice"`` (a message for the user with no progress).
    done, total : int
        Steps finished and steps in this stage (``total`` may be 0 when
        unknown).
    plane, n_planes : int
        Index of the plane being processed and the number of planes.
    message : str
        A sentence for the user.
    data : dict
        Stage-specific values (loss, metric, a preview array, ...).
    """

    stage: str
    done: int = 0
    total: int = 0
    plane: int = 0
    n_planes: int = 1
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Overall fraction done in [0, 1], planes included."""
        inner = self.done / self.total if self.total else 0.0
        return min(1.0, (self.plane + inner) / max(self.n_planes, 1))


Job = Generator[Progress, None, T]


def run_job(job: Job[T], /, *, on_progress: Callable[[Progress], None] | None = None) -> T:
    """Run a job generator to the end and return its result.

    Parameters
    ----------
    job : generator
        Yields :class:`Progress`, returns the result.
    on_progress : callable, optional
        Called with every progress report.
    """
    while True:
        try:
            report = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)
