"""Progress reports of long jobs, and draining a job generator.

Long jobs (segmenting, training, exporting) are generators: they yield
:class:`Progress` objects between steps and *return* their result. Stopping
a job means not asking for the next step; a GUI does that with
``thread_worker.quit()``, a script with ``KeyboardInterrupt``.

A job that runs other jobs (a batch of files, an image block by block) hands
each of them a share of its own progress with :func:`within`, so the
:attr:`Progress.fraction` of the outer job only grows.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

__all__ = ["Job", "Progress", "Stage", "relayed", "run_job", "within"]

T = TypeVar("T")


class Stage(StrEnum):
    """What a job is doing; each value is a string, so ``Stage.TILES == "tiles"``."""

    #: Getting ready: reading annotation, converting a network for OpenVINO.
    PREPARE = "prepare"
    #: Reading the intensity statistics of the planes of a large image.
    STATISTICS = "statistics"
    #: A pass that estimates the size of the image's objects (``done`` of ``total`` passes at most).
    OBJECT_SIZE = "object-size"
    #: Batches of tiles through the network (``done`` of ``total`` tiles of one plane).
    TILES = "tiles"
    #: A plane of an image or stack is finished.
    PLANE = "plane"
    #: A block of a large image is finished.
    BLOCKS = "blocks"
    #: Objects cut by block borders are joined and renumbered.
    RELABEL = "relabel"
    #: The down-sampled levels of an OME-Zarr result are written.
    PYRAMID = "pyramid"
    #: A file of a batch begins (``data["file"]``: its path).
    FILE_START = "file-start"
    #: A file of a batch is finished (``data["summary"]``: its summary row).
    FILE_DONE = "file-done"
    #: A training step is finished (``data``: loss, metric, ...).
    TRAIN = "train"
    #: After training, the instance rule's outline threshold is fitted to the annotation.
    CALIBRATE = "calibrate"
    #: A file of an export is being written.
    EXPORT = "export"
    #: A message for the user, with no progress of its own.
    NOTICE = "notice"


@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    Attributes
    ----------
    stage : Stage
        What is being done (a plain string naming a stage is turned into the
        :class:`Stage`; any other string is refused).
    done, total : int
        Steps finished and steps in this stage (``total`` may be 0 when
        unknown).
    plane, n_planes : int
        Index of the image plane being processed and the number of planes.
    message : str
        A sentence for the user.
    data : dict
        Stage-specific values (loss, metric, a summary row, ...): plain
        values only, never a live network.
    span : tuple of float
        The part ``(start, stop)`` of the whole job that this report's own
        ``(plane + done / total) / n_planes`` runs through; set by
        :func:`within` when a job runs inside another.
    """

    stage: Stage
    done: int = 0
    total: int = 0
    plane: int = 0
    n_planes: int = 1
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    span: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))

    @property
    def local_fraction(self) -> float:
        """Fraction done of the job that yielded this report, in [0, 1]."""
        inner = self.done / self.total if self.total else 0.0
        return min(1.0, (self.plane + inner) / max(self.n_planes, 1))

    @property
    def fraction(self) -> float:
        """Fraction done of the whole job, in [0, 1]: it only grows from one report to the next."""
        start, stop = self.span
        return start + (stop - start) * self.local_fraction


Job = Generator[Progress, None, T]


def within(job: Generator[Any, None, T], /, *, start: float, stop: float) -> Generator[Any, None, T]:
    """Run ``job`` as the part ``[start, stop]`` of an outer job's progress.

    Every :class:`Progress` that ``job`` yields is passed on with its
    :attr:`~Progress.span` mapped into ``[start, stop]`` (other messages pass
    unchanged); the job's result is returned.

    Parameters
    ----------
    job : generator
        An inner job.
    start, stop : float
        Its share of the outer job, ``0 <= start <= stop <= 1``.

    Examples
    --------
    >>> def inner():
    ...     yield Progress(Stage.TILES, done=1, total=2)
    ...     return "result"
    >>> reports = []
    >>> run_job(within(inner(), start=0.5, stop=1.0), on_progress=reports.append)
    'result'
    >>> reports[0].fraction
    0.75
    """
    if not 0.0 <= start <= stop <= 1.0:
        raise ValueError(f"a share of a job runs within [0, 1], got [{start}, {stop}]")

    def mapped(report: Progress) -> Progress:
        a, b = report.span
        return replace(report, span=(start + (stop - start) * a, start + (stop - start) * b))

    return (yield from relayed(job, mapped))


def relayed(job: Generator[Any, None, T], change: Callable[[Progress], Progress], /) -> Generator[Any, None, T]:
    """Run ``job``, passing on every :class:`Progress` it yields as ``change(report)``; return its result.

    Other messages pass unchanged. Stopping the outer job (``close()``)
    stops ``job`` at once. :func:`within` is this with the span mapped.
    """
    try:
        while True:
            try:
                report = next(job)
            except StopIteration as finished:
                return finished.value
            yield change(report) if isinstance(report, Progress) else report
    finally:
        job.close()  # an outer job that is stopped stops this one at once (no-op once finished)


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
