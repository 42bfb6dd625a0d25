"""Pay napari's and torch's first-use costs in a background thread, not on the GUI thread.

The first result layer a job adds makes napari import pandas (for the
layer's features table) and vispy build its line dash atlas (for the
labels polygon overlay): more than a second on the GUI thread of a small
machine, during which the window freezes. The first network call
initialises torch's CPU kernels. None of this needs the GUI thread, so the
widgets call :func:`start_warm_up` when they are created and a daemon
thread does it while the user is still choosing layers.

Only import-time work and pure caches are warmed here; nothing creates Qt
objects or touches layers (that must stay on the GUI thread).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Modules whose first import would otherwise happen on the GUI thread when
#: a job's result arrives (found with ``benchmarks/gui_responsiveness.py --stalls``).
MODULES = (
    "pandas",
    "scipy.ndimage",
    "skimage.segmentation",
    "skimage.measure",
    # the first Labels layer's random colormap imports these through skimage's lazy loader
    "skimage.color.colorconv",
    "scipy.linalg",
    "vispy.visuals.line.dash_atlas",
    "napari._vispy.layers.labels",
    "napari._vispy.layers.image",
    "napari._vispy.overlays.labels_polygon",
    "napari._vispy.overlays.labels_brush_stroke",
    "napari.layers.labels._labels_utils",
)

_lock = threading.Lock()
_thread: threading.Thread | None = None
#: Set when the warm-up has finished (whether every step worked or not).
done = threading.Event()


def _dash_atlas() -> None:
    """Fill vispy's cache of dash patterns (about 0.2 s, 1 s and more under load, on first use)."""
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()


def _torch_kernels() -> None:
    """Run a tiny convolution, so the first network call does not also initialise torch's CPU kernels."""
    import torch

    with torch.inference_mode():
        torch.nn.functional.conv2d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 3, 3), padding=1).softmax(1)


#: Work beyond imports, in order.
STEPS: tuple[Callable[[], None], ...] = (_dash_atlas, _torch_kernels)


def _run() -> None:
    started = time.perf_counter()
    try:
        for name in MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a module napari moved or dropped only costs speed
                log.debug("warm-up: could not import %s", name, exc_info=True)
        for step in STEPS:
            try:
                step()
            except Exception:  # noqa: BLE001 - the same: warming up is an optimisation
                log.debug("warm-up: %s failed", step.__name__, exc_info=True)
    finally:
        log.debug("warm-up done in %.2f s", time.perf_counter() - started)
        done.set()


def start_warm_up() -> threading.Thread:
    """Start the warm-up thread once per process; later calls return the same thread.

    Returns
    -------
    threading.Thread
        The daemon thread (it may have finished); :data:`done` is set when it has.
    """
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="napari-unet-warm-up", daemon=True)
            _thread.start()
        return _thread
