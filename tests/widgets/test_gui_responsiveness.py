"""napari's GUI thread keeps up while Segment and Fine-tune run, and Cancel/Stop act within a second.

Runs ``benchmarks/gui_responsiveness.py`` once in a fresh process (first-use
costs such as imports only show in a fresh process) on a 256 x 256 crop of
the nuclei sample. The stall bound is generous because CI machines are
noisy; the benchmark itself reports the real figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "gui_responsiveness.py"
#: Worst acceptable gap of the GUI-thread timer (seconds); the goal is 0.1 s on a quiet machine.
MAX_STALL = 0.8
#: Cancel and Stop must end their job within this many seconds. The goal is 1 s (measured by
#: benchmarks/gui_responsiveness.py: 0.39 s median for Stop); the bound leaves room for a busy
#: CI machine (1.07 s was seen once in a full-suite run) and still catches the old 2.5-5 s Stop.
MAX_STOP = 2.0


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, dict]:
    """The benchmark's measurements of one fresh run, by scenario."""
    out = tmp_path_factory.mktemp("gui") / "runs.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCHMARK.parents[1] / "src"), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--runs", "1", "--crop", "256", "--stop-after", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (run,) = json.loads(out.read_text())
    return {m["scenario"]: m for m in run}


def test_every_scenario_ran(measured):
    assert list(measured) == ["segment (first)", "segment (again)", "segment + cancel", "fine-tune + stop"]


def test_no_heavy_module_is_first_imported_on_the_gui_thread_during_segment(measured):
    sys.path.insert(0, str(BENCHMARK.parent))
    try:
        from gui_responsiveness import HEAVY_PREFIXES
    finally:
        sys.path.remove(str(BENCHMARK.parent))
    for scenario in ("segment (first)", "segment (again)"):
        heavy = sorted({name for name in measured[scenario]["gui_imports"] if name.startswith(HEAVY_PREFIXES)})
        assert not heavy, (
            f"{scenario}: imported on the GUI thread: {heavy[:10]}, from {measured[scenario]['import_stacks']}"
        )


@pytest.mark.parametrize("scenario", ["segment (first)", "segment (again)", "segment + cancel", "fine-tune + stop"])
def test_the_gui_thread_never_stalls_long(measured, scenario):
    found = measured[scenario]
    assert found["worst_gap"] < MAX_STALL, f"{scenario}: stalled {found['worst_gap']:.2f} s: {found['stalls']}"


@pytest.mark.parametrize("scenario", ["segment + cancel", "fine-tune + stop"])
def test_cancel_and_stop_end_the_job_within_a_second(measured, scenario):
    seconds = measured[scenario]["stop_to_end"]
    assert seconds is not None, f"{scenario}: the job ended before the button was pressed"
    assert seconds < MAX_STOP, f"{scenario}: the job ended {seconds:.2f} s after the click"
