"""How long napari's GUI thread stalls while Segment and Fine-tune run, and how fast Cancel/Stop act.

Starts a real napari viewer (1280 x 800), docks the Segment and Fine-tune
widgets and clicks their buttons as a user would, while a 10 ms ``QTimer``
ticks on the GUI thread. The worst gap between two ticks is the longest time
the window could not repaint or react to the mouse. A watchdog thread
records what the GUI thread was doing during every gap over 50 ms (its
stack) and an audit hook records the modules first imported on it, so a
stall can be traced to its cause.

Every run is a fresh Python process (``--runs N`` starts N of them), so
first-use costs (imports, caches) count, as they do for a user. Scenarios of
one run, in order:

``segment (first)``
    Segment the nuclei sample; the first run in the process.
``segment (again)``
    Segment the same image again (its result layer exists).
``segment + cancel``
    Segment and press Cancel after the first progress report.
``fine-tune + stop``
    Fine-tune on the Segment result and press Stop after ``--stop-after``
    seconds of training steps.

Usage (repository root; needs a display, e.g. Xvfb)::

    xvfb-run -a -s "-screen 0 1280x1024x24" env PYTHONPATH=src python benchmarks/gui_responsiveness.py --runs 5

``--json PATH`` also writes every measurement (the test of GUI
responsiveness reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Milliseconds between two ticks of the GUI-thread timer.
TICK_MS = 10
#: A gap longer than this (seconds) is a stall whose cause is recorded.
STALL_S = 0.05
#: Seconds measured after a job ended (the new layer is drawn then).
AFTER_S = 0.5
#: Module name prefixes counted as heavy when first imported on the GUI thread.
HEAVY_PREFIXES = (
    "torch",
    "pandas",
    "scipy",
    "skimage",
    "vispy",
    "dask",
    "numba",
    "matplotlib",
    "tifffile",
    "safetensors",
    "PIL",
)


@dataclass
class Stall:
    """One gap of the GUI-thread timer over :data:`STALL_S`: how long and where the thread was."""

    seconds: float
    where: list[str]


@dataclass
class Measurement:
    """What one scenario of one run measured."""

    scenario: str
    worst_gap: float
    job_seconds: float
    stop_to_end: float | None = None
    gui_imports: list[str] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)
    import_stacks: dict[str, list[str]] = field(default_factory=dict)


class StallMeter:
    """Ticks a 10 ms ``QTimer`` on the GUI thread and records the gaps between ticks.

    A watchdog thread samples the GUI thread's stack while a tick is late, and
    an audit hook records the modules imported on the GUI thread (first imports
    only: Python audits ``import`` only when it loads a module).
    """

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.main = threading.main_thread().ident
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()
        self.worst = 0.0
        self.stalls: list[Stall] = []
        self.imports: list[str] = []
        self.import_stacks: dict[str, list[str]] = {}
        self._samples: list[str] = []
        self._measuring = False
        self._lock = threading.Lock()
        sys.addaudithook(self._audit)
        threading.Thread(target=self._watch, daemon=True, name="stall-watchdog").start()
        self.timer.start()

    def reset(self) -> None:
        """Start a new measurement window."""
        with self._lock:
            self.last = time.perf_counter()
            self.worst = 0.0
            self.stalls = []
            self.imports = []
            self.import_stacks = {}
            self._samples = []
            self._measuring = True

    def stop(self) -> tuple[float, list[Stall], list[str], dict[str, list[str]]]:
        """End the window: the worst gap, the stalls, the modules imported on the GUI thread and from where.

        The "where" is the stack of the first import of each heavy package (see :data:`HEAVY_PREFIXES`).
        """
        self._tick()
        with self._lock:
            self._measuring = False
            return self.worst, list(self.stalls), list(self.imports), dict(self.import_stacks)

    def _tick(self) -> None:
        now = time.perf_counter()
        with self._lock:
            gap = now - self.last
            self.last = now
            if not self._measuring:
                return
            self.worst = max(self.worst, gap)
            if gap > STALL_S:
                self.stalls.append(Stall(round(gap, 3), _most_common(self._samples)))
            self._samples = []

    def _watch(self) -> None:
        while True:
            time.sleep(0.005)
            with self._lock:
                late = self._measuring and time.perf_counter() - self.last > STALL_S
            if late:
                frame = sys._current_frames().get(self.main)
                if frame is not None:
                    stack = traceback.extract_stack(frame)
                    where = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack[-40:]]
                    with self._lock:
                        self._samples.append("\n".join(where))

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "import" and self._measuring and threading.get_ident() == self.main:
            name = str(args[0])
            self.imports.append(name)
            top = name.partition(".")[0]
            if name.startswith(HEAVY_PREFIXES) and top not in self.import_stacks:
                stack = traceback.extract_stack()[:-1]
                self.import_stacks[top] = [
                    f"{Path(f.filename).name}:{f.lineno} {f.name}"
                    for f in stack
                    if "importlib" not in f.filename and "<frozen" not in f.filename
                ][-12:]


def _most_common(samples: list[str]) -> list[str]:
    """The stack seen most often during a stall, most recent call last (trimmed to the interesting end)."""
    if not samples:
        return []
    stack = max(set(samples), key=samples.count)
    return stack.splitlines()[-24:]


def _wait_until(app: Any, condition: Callable[[], bool], timeout: float) -> None:
    """Run the Qt event loop until ``condition()`` holds; raise TimeoutError after ``timeout`` seconds."""
    from qtpy.QtCore import QEventLoop

    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError(f"gave up after {timeout} s")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)
        time.sleep(0.001)


def _spin(app: Any, seconds: float) -> None:
    end = time.perf_counter() + seconds
    _wait_until(app, lambda: time.perf_counter() > end, seconds + 60)


def _measure(
    app: Any,
    meter: StallMeter,
    scenario: str,
    start: Callable[[], Any],
    is_running: Callable[[], bool],
    *,
    press: Callable[[], None] | None = None,
    press_when: Callable[[], bool] | None = None,
    timeout: float = 300,
) -> Measurement:
    """Click ``start``, optionally ``press`` (Cancel/Stop) once ``press_when()`` holds, and wait for the end."""
    meter.reset()
    began = time.perf_counter()
    start()
    pressed: float | None = None
    if press is not None:
        assert press_when is not None
        _wait_until(app, lambda: press_when() or not is_running(), timeout)
        if is_running():
            pressed = time.perf_counter()
            press()
    _wait_until(app, lambda: not is_running(), timeout)
    ended = time.perf_counter()
    _spin(app, AFTER_S)
    worst, stalls, imports, stacks = meter.stop()
    return Measurement(
        scenario,
        round(worst, 4),
        round(ended - began, 3),
        None if pressed is None else round(ended - pressed, 3),
        imports,
        stalls,
        stacks,
    )


def run_once(*, crop: int | None, stop_after: float, ready_wait: float) -> list[Measurement]:
    """One run in this process: the scenarios of the module docstring, in order."""
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    app = QApplication.instance()
    meter = StallMeter()
    viewer.open_sample("napari-unet-toolkit", "nuclei")
    image = viewer.layers["nuclei"]
    if crop:
        image.data = np.asarray(image.data)[:crop, :crop]
    _, segment = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Segment")
    _, tune = viewer.window.add_plugin_dock_widget("napari-unet-toolkit", "Fine-tune")
    _spin(app, ready_wait)  # a user takes a moment before the first click

    results = [
        _measure(app, meter, "segment (first)", segment.segment_button.click, lambda: segment.is_running),
        _measure(app, meter, "segment (again)", segment.segment_button.click, lambda: segment.is_running),
    ]
    reports: list[Any] = []

    def segment_and_watch() -> None:
        segment.segment_button.click()
        segment.worker.yielded.connect(reports.append)

    results.append(
        _measure(
            app,
            meter,
            "segment + cancel",
            segment_and_watch,
            lambda: segment.is_running,
            press=segment.cancel_button.click,
            press_when=lambda: bool(reports),
        )
    )
    tune.budget_spin.setValue(120)
    assert tune.finetune_button.isEnabled(), tune.finetune_button.toolTip()
    results.append(
        _measure(
            app,
            meter,
            "fine-tune + stop",
            tune.finetune_button.click,
            lambda: tune.is_running,
            press=tune.stop_button.click,
            press_when=lambda: bool(tune._job and tune._job.last.get("seconds", 0.0) >= stop_after),
        )
    )
    assert tune.result is not None and tune.result.stopped, "Stop did not end the training"
    viewer.close()
    return results


def _table(runs: list[list[dict[str, Any]]]) -> str:
    scenarios = [m["scenario"] for m in runs[0]]
    lines = [f"{'scenario':<18} {'worst GUI gap (s) median / worst':>34} {'Cancel/Stop to end (s) median / worst':>40}"]
    for i, name in enumerate(scenarios):
        gaps = [run[i]["worst_gap"] for run in runs]
        stops = [run[i]["stop_to_end"] for run in runs if run[i]["stop_to_end"] is not None]
        stop_text = f"{statistics.median(stops):.3f} / {max(stops):.3f}" if stops else "-"
        lines.append(f"{name:<18} {statistics.median(gaps):>25.3f} / {max(gaps):.3f} {stop_text:>40}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes to run (default 3)")
    parser.add_argument("--crop", type=int, default=0, help="segment only the top-left CROP x CROP pixels (0: all)")
    parser.add_argument("--stop-after", type=float, default=3.0, help="seconds of training before Stop")
    parser.add_argument(
        "--ready-wait", type=float, default=1.0, help="seconds between docking the widgets and the first click"
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--stalls", action="store_true", help="print where the GUI thread was in every stall")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        found = run_once(crop=args.crop or None, stop_after=args.stop_after, ready_wait=args.ready_wait)
        print("RESULT " + json.dumps([asdict(m) for m in found]), flush=True)
        return
    runs = []
    for n in range(args.runs):
        command = [
            sys.executable,
            __file__,
            "--child",
            "--crop",
            str(args.crop),
            "--stop-after",
            str(args.stop_after),
            "--ready-wait",
            str(args.ready_wait),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"run {n + 1} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        runs.append(json.loads(lines[-1][len("RESULT ") :]))
        print(
            f"run {n + 1}/{args.runs}: " + ", ".join(f"{m['scenario']} {m['worst_gap']:.3f} s" for m in runs[-1]),
            flush=True,
        )
    print(_table(runs))
    heavy = sorted(
        {
            name.partition(".")[0]
            for run in runs
            for m in run
            for name in m["gui_imports"]
            if name.startswith(HEAVY_PREFIXES)
        }
    )  # packages; --json has every module
    print(f"heavy modules first imported on the GUI thread: {', '.join(heavy) if heavy else 'none'}")
    if args.stalls:
        for n, run in enumerate(runs, 1):
            for m in run:
                for stall in sorted(m["stalls"], key=lambda stall: -stall["seconds"])[:5]:
                    print(f"\nrun {n}, {m['scenario']}: {stall['seconds']:.3f} s in")
                    print("    " + "\n    ".join(stall["where"]))
                for top, where in m["import_stacks"].items():
                    print(f"\nrun {n}, {m['scenario']}: {top} first imported on the GUI thread from")
                    print("    " + "\n    ".join(where))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
