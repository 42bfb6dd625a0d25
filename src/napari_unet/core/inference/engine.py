"""Which engine runs the network on a batch of tiles: PyTorch, or OpenVINO on the CPU.

On CPUs, OpenVINO runs our U-Nets about 1.6x faster than PyTorch (measured
with ``benchmarks/inference.py``: 2.4 against 1.2-1.6 Mpx/s for the nuclei
model on 2 cores, see docs/performance.md). It is an optional extra
(``pip install "napari-unet-toolkit[openvino]"``); without it everything runs in
PyTorch. The results agree with PyTorch's to float32 rounding (about 1e-5 in
the logits), because OpenVINO is asked for float32 inference.

Converting a network takes one to two seconds, longer than PyTorch needs
for a 512 x 512 image. ``"auto"`` therefore converts a network only once it
has been given :data:`CONVERT_AFTER_PIXELS` input pixels (a 2048 x 2048
image at once, or about a dozen 512 x 512 images one after the other), the
way a JIT compiler waits for hot code: small one-off jobs keep PyTorch's
start-up, long sessions and large images get the faster engine.

What has been counted and converted lives in an :class:`EngineCache` owned by
the caller (a viewer session, one command, one job), never in the module: a
call given a fresh cache gives the same result whatever ran before in the
process. A converted network is kept by its cache for as long as the network
object lives and its weights do not change (fine-tuning changes them in
place, which is noticed). Training's own validation passes
``engine="torch"``: its weights change between every two calls.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch

from napari_unet.core.errors import UserError
from napari_unet.core.inference.device import compute_dtype
from napari_unet.core.network.folding import folded_copy, has_foldable_norm
from napari_unet.core.progress import Job, Progress, Stage, run_job

log = logging.getLogger(__name__)

Engine = Literal["auto", "torch", "openvino"]
ENGINES: tuple[str, ...] = ("auto", "torch", "openvino")

#: Environment variable that sets what ``engine="auto"`` means: ``torch`` keeps
#: PyTorch even where OpenVINO is installed (``auto`` or unset: OpenVINO if installed).
ENGINE_VARIABLE = "NAPARI_UNET_CPU_ENGINE"

Runner = Callable[[torch.Tensor], torch.Tensor]

# Tracing a network for OpenVINO warns about the skip-connection size check of UNet.forward
# (with same padding and tiles on the pooling grid that branch never changes). The conversion
# hides it, but a conversion still running when its caller restores the process's warning
# settings (Cancel, Ctrl-C) loses that: this filter stays for the whole process.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"napari_unet\.core\.network\.unet")

#: Input pixels (tile pixels, margins included) a network runs through PyTorch
#: under ``"auto"`` before it is converted for OpenVINO: about 3 s of PyTorch
#: work on 2 CPU cores, against 1-2 s to convert.
CONVERT_AFTER_PIXELS = 4_000_000


class EngineError(UserError, RuntimeError):
    """The engine asked for cannot run this network here."""


def openvino_available() -> bool:
    """True if the ``openvino`` package can be imported (a failed import is not tried again)."""
    global _OPENVINO_MISSING
    if _OPENVINO_MISSING:
        return False
    try:
        import_openvino()
    except ImportError:
        _OPENVINO_MISSING = True
        return False
    return True


#: Set once importing openvino failed: every Segment asks, and a failed import searches sys.path.
_OPENVINO_MISSING = False


def import_openvino() -> ModuleType:
    """Import ``openvino`` with its usage telemetry switched off.

    Importing openvino (and converting a model) sends usage events to Google
    Analytics unless the user has opted out with ``opt_in_out --opt_out``.
    napari-unet sends nothing anywhere, and many of its users work offline:
    while openvino is first imported, its ``openvino_telemetry`` package is
    hidden, so openvino falls back to its own no-op stub for this process.

    Raises
    ------
    ImportError
        If openvino is not installed.
    """
    loaded = sys.modules.get("openvino")
    if loaded is not None:
        return loaded
    hidden = {
        name: module
        for name, module in sys.modules.items()
        if name == "openvino_telemetry" or name.startswith("openvino_telemetry.")
    }
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import now raises ImportError
    try:
        return importlib.import_module("openvino")
    finally:
        del sys.modules["openvino_telemetry"]
        sys.modules.update(hidden)


def choose_engine(
    net: torch.nn.Module, device: torch.device, /, *, engine: str = "auto", cache: EngineCache | None = None
) -> str:
    """The engine that will run ``net`` on ``device``: ``"torch"`` or ``"openvino"``.

    Parameters
    ----------
    net : torch.nn.Module
        A :class:`~napari_unet.core.network.unet.UNet`.
    device : torch.device
        Where the job runs; OpenVINO is used on the CPU only.
    engine : {"auto", "torch", "openvino"}
        ``"auto"``: OpenVINO on the CPU when it is installed and the network
        has ``same`` padding (unless the environment variable
        ``NAPARI_UNET_CPU_ENGINE`` says ``torch``); PyTorch otherwise.
        (:func:`network_runner` also waits until converting pays back.)
    cache : EngineCache, optional
        Networks it failed to convert are not tried again.

    Raises
    ------
    ValueError
        For an unknown engine name.
    EngineError
        If ``"openvino"`` is asked for and cannot be used (not installed, not
        the CPU, or a ``valid`` network, whose crops depend on the tile size).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "torch":
        return "torch"
    reason = _why_not_openvino(net, device, cache)
    if engine == "openvino":
        if reason:
            raise EngineError(f"OpenVINO cannot run this job: {reason}")
        return "openvino"
    wanted = os.environ.get(ENGINE_VARIABLE, "auto").strip().lower() or "auto"
    if wanted not in ENGINES:
        raise ValueError(f"{ENGINE_VARIABLE} must be auto, torch or openvino, got {wanted!r}")
    if wanted == "torch" or reason:
        return "torch"
    return "openvino"


def network_runner(
    net: torch.nn.Module,
    device: torch.device,
    /,
    *,
    engine: str = "auto",
    pixels: int = 0,
    cache: EngineCache | None = None,
    amp: bool = False,
) -> Runner:
    """A function that maps a batch of tiles (N, C, H, W) to logits, with the engine chosen.

    The blocking form of :func:`network_runner_job` (a conversion, when one
    is due, happens before it returns).

    Parameters
    ----------
    net : torch.nn.Module
        The network, already on ``device`` and in eval mode.
    device : torch.device
        Where the tiles are.
    engine : {"auto", "torch", "openvino"}
        See :func:`choose_engine`. Under ``"auto"`` a network OpenVINO could
        run stays with PyTorch until it has been given
        :data:`CONVERT_AFTER_PIXELS` input pixels, this job's included.
    pixels : int
        Input pixels this job will run (all tiles, margins included).
    cache : EngineCache, optional
        What earlier calls of the same owner counted and converted; without
        one, this call is counted on its own (a fresh cache).
    amp : bool
        Mixed precision where the device has it (see
        :func:`~napari_unet.core.inference.device.compute_dtype`): OpenVINO
        is then compiled for bfloat16; PyTorch gets it from the caller's
        autocast.

    Returns
    -------
    callable
        Takes a batch on ``device`` and returns logits there (PyTorch may
        return a lower precision under autocast). PyTorch runs a copy of the
        network with its batch normalisation folded into the convolutions
        (:mod:`napari_unet.core.network.folding`; the same function to float32
        rounding). With ``"auto"``, a network OpenVINO fails to convert is run
        by PyTorch, with a logged warning.
    """
    return run_job(network_runner_job(net, device, engine=engine, pixels=pixels, cache=cache, amp=amp))


def network_runner_job(
    net: torch.nn.Module,
    device: torch.device,
    /,
    *,
    engine: str = "auto",
    pixels: int = 0,
    cache: EngineCache | None = None,
    plane_index: int = 0,
    n_planes: int = 1,
    amp: bool = False,
) -> Job[Runner]:
    """:func:`network_runner` as a job: while a network is converted, it yields progress every 0.1 s.

    Converting takes 1-2.5 s; it runs in a thread so that a job stopped at
    one of these yields (Cancel) ends at once. The conversion then finishes
    in the background and is kept in ``cache`` for the next job; a process
    that ends meanwhile (Ctrl-C on the command line) waits for it to finish
    before exiting, which ending OpenVINO's work midway would abort.

    Yields
    ------
    Progress
        Stage ``"prepare"`` while the network is being converted.
    """
    cache = cache if cache is not None else EngineCache()
    chosen = choose_engine(net, device, engine=engine, cache=cache)
    if chosen == "torch":
        return cache.folded(net)
    precision = compute_dtype(device, amp=amp)
    if engine == "auto" and not cache.is_converted(net, precision) and cache.count(net, pixels) < CONVERT_AFTER_PIXELS:
        return cache.folded(net)
    outcome: dict[str, object] = {}
    done = threading.Event()

    def convert() -> None:
        try:
            outcome["compiled"] = cache.compiled(net, precision)
        except Exception as exc:  # noqa: BLE001 - handed to the job below
            outcome["error"] = exc
        finally:
            done.set()

    if cache.is_converted(net, precision):
        convert()
    else:
        # Not a daemon: the interpreter waits for it at exit. A daemon thread still inside
        # OpenVINO's C++ code when the process ends (Ctrl-C or Cancel during the conversion,
        # then exit) is unwound by the interpreter's shutdown and aborts the process
        # ("terminate called without an active exception", SIGABRT) after the clean message.
        threading.Thread(target=convert, name="napari-unet-openvino-conversion", daemon=False).start()
    while not done.wait(0.1):
        yield Progress(
            Stage.PREPARE,
            plane=plane_index,
            n_planes=n_planes,
            message="preparing the network for OpenVINO (once per model)",
        )
    error = outcome.get("error")
    if error is not None:
        if engine == "openvino":
            raise EngineError(f"OpenVINO could not convert the network: {error}") from error  # type: ignore[misc]
        log.warning("OpenVINO could not convert the network (%s); running it with PyTorch", error)
        cache.mark_failed(net)
        return cache.folded(net)
    compiled: Runner = outcome["compiled"]  # type: ignore[assignment]
    if engine == "openvino":
        return compiled
    return _WithFallback(compiled, net, cache)


def runner_engine(runner: Runner, /) -> str:
    """``"openvino"`` if ``runner`` (from :func:`network_runner`) runs the network in OpenVINO, else ``"torch"``."""
    return str(getattr(runner, "engine_name", "torch"))


class _WithFallback:
    """OpenVINO, and PyTorch for the rest of the job if OpenVINO fails on a tile (``"auto"`` only)."""

    def __init__(self, compiled: Runner, net: torch.nn.Module, cache: EngineCache) -> None:
        self._compiled: Runner | None = compiled
        self._net = net
        self._cache = cache

    @property
    def engine_name(self) -> str:
        """``"openvino"``, or ``"torch"`` once OpenVINO failed and PyTorch took over."""
        return "openvino" if self._compiled is not None else "torch"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as exc:  # noqa: BLE001 - PyTorch can still do the work
                log.warning("OpenVINO failed on a tile (%s); running the network with PyTorch", exc)
                self._compiled = None
                self._cache.mark_failed(self._net)
        return self._cache.folded(self._net)(x)


def _why_not_openvino(net: torch.nn.Module, device: torch.device, cache: EngineCache | None) -> str:
    """Why OpenVINO cannot run ``net`` on ``device``, or ``""`` if it can."""
    if device.type != "cpu":
        return f"it runs on the CPU only, not on {device}"
    config = getattr(net, "config", None)
    if config is None or getattr(config, "padding", None) != "same":
        return "only U-Nets with same padding are converted"
    if not openvino_available():
        return 'it is not installed; pip install "napari-unet-toolkit[openvino]"'
    if cache is not None and cache.has_failed(net):
        return "converting this network failed before"
    return ""


class _CompiledNetwork:
    """An OpenVINO-compiled copy of a network, called like the network."""

    engine_name = "openvino"

    def __init__(self, net: torch.nn.Module, precision: torch.dtype = torch.float32) -> None:
        ov = import_openvino()

        config: Any = net.config
        step = 2 ** (config.depth - 1)
        example = torch.zeros(1, config.in_channels, 4 * step, 4 * step)
        was_training = net.training
        net.eval()
        try:
            with warnings.catch_warnings():
                # tracing warns about the skip-connection size check: with same
                # padding and tiles on the pooling grid the branch never changes
                warnings.simplefilter("ignore")
                converted = ov.convert_model(net, example_input=example, input=[(-1, config.in_channels, -1, -1)])
        finally:
            net.train(was_training)
        threads = max(1, torch.get_num_threads())
        # f32 keeps results equal to PyTorch's float32 ones; bf16 (asked for with mixed precision on
        # processors with bfloat16 units) is what PyTorch's CPU autocast does; LATENCY uses all
        # threads on one request
        hint = "bf16" if precision == torch.bfloat16 else "f32"
        self.precision = precision
        self._model = ov.Core().compile_model(
            converted,
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint},
        )
        self._request = self._model.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one tile batch at a time

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().to(torch.float32).contiguous().numpy())
        with self._lock:
            result = self._request.infer({0: batch})
            logits = np.array(result[0], copy=True)
        return torch.from_numpy(logits)


class EngineCache:
    """What one owner's jobs taught about their networks: conversions, work done, failures.

    Under ``engine="auto"`` a network is converted for OpenVINO once it has
    run :data:`CONVERT_AFTER_PIXELS` input pixels through PyTorch *in the jobs
    given this cache*, and converted networks are reused by them. The owner
    decides how far that memory reaches: a napari viewer keeps one for its
    session, a command keeps one for its run, and a job given none starts its
    own, so that its results do not depend on earlier work in the process.
    Everything is counted per set of weights: new weights (a fine-tune) must
    earn their conversion again. Safe to share between threads.

    Examples
    --------
    >>> from napari_unet.core import new_model
    >>> net = new_model(depth=2, base_features=4).network
    >>> cache = EngineCache()
    >>> cache.count(net, 100), cache.count(net, 50), cache.is_converted(net)
    (100, 150, False)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: network -> {precision: (fingerprint of the weights, compiled network)}
        self._compiled: weakref.WeakKeyDictionary[
            torch.nn.Module, dict[torch.dtype, tuple[tuple, _CompiledNetwork]]
        ] = weakref.WeakKeyDictionary()
        #: (engine, precision) -> input megapixels per second at the engine's best tile size
        self._speeds: dict[tuple[str, str], float] = {}
        #: what tile_shape was chosen for a (engine, precision, extent, architecture): kept, so that the
        #: same image segmented again in a session is cut the same way (bit-identical results)
        self._tile_shapes: dict[tuple, tuple[int, int]] = {}
        #: network -> (fingerprint of the weights, copy with batch normalisation folded)
        self._folded: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.nn.Module]] = (
            weakref.WeakKeyDictionary()
        )
        #: network -> (fingerprint of the weights counted for, input pixels run through PyTorch)
        self._torch_pixels: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, int]] = weakref.WeakKeyDictionary()
        self._failed: set[tuple] = set()

    def count(self, net: torch.nn.Module, pixels: int, /) -> int:
        """Add ``pixels`` of PyTorch work for ``net``'s current weights; the total so far."""
        with self._lock:
            fingerprint = _fingerprint(net)
            counted_for, given = self._torch_pixels.get(net, (fingerprint, 0))
            given = (given if counted_for == fingerprint else 0) + max(0, int(pixels))
            self._torch_pixels[net] = (fingerprint, given)
            return given

    def is_converted(self, net: torch.nn.Module, precision: torch.dtype = torch.float32, /) -> bool:
        """True if a copy of ``net`` with its current weights is held converted for ``precision``."""
        with self._lock:
            cached = self._compiled.get(net, {}).get(precision)
            return cached is not None and cached[0] == _fingerprint(net)

    def compiled(self, net: torch.nn.Module, precision: torch.dtype = torch.float32, /) -> Runner:
        """The network converted for OpenVINO in ``precision``, for ``net``'s current weights; converted once."""
        with self._lock:
            fingerprint = _fingerprint(net)
            cached = self._compiled.get(net, {}).get(precision)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            compiled = _CompiledNetwork(net, precision)
            # fingerprint again: conversion must not count as a change
            self._compiled.setdefault(net, {})[precision] = (_fingerprint(net), compiled)
            return compiled

    def folded(self, net: torch.nn.Module, /) -> torch.nn.Module:
        """What PyTorch runs for ``net``: a copy with batch normalisation folded in, made once per set of weights.

        ``net`` itself when it has no foldable normalisation or is in
        training mode (a training step's forward pass must update its
        statistics).
        """
        if net.training or not has_foldable_norm(net):
            return net
        with self._lock:
            fingerprint = _fingerprint(net)
            cached = self._folded.get(net)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            copy = folded_copy(net)
            self._folded[net] = (fingerprint, copy)
            return copy

    def record_speed(self, engine: str, precision: torch.dtype, speed_mpx_s: float, /) -> None:
        """Remember how fast ``engine`` ran in ``precision`` (input Mpx/s, scaled to its best tile size).

        Later jobs of this owner size their CPU tiles by it (see
        :mod:`napari_unet.core.inference.tile_choice`); each new figure is
        averaged with the last one, so one slow batch (a busy processor)
        moves it only halfway.
        """
        if not speed_mpx_s > 0:
            return
        key = (engine, str(precision))
        with self._lock:
            last = self._speeds.get(key)
            self._speeds[key] = float(speed_mpx_s) if last is None else 0.5 * (last + float(speed_mpx_s))

    def tile_shape(self, key: tuple, choose: Callable[[], tuple[int, int]], /) -> tuple[int, int]:
        """The tile shape chosen for ``key`` before, or ``choose()``'s, remembered from now on."""
        with self._lock:
            known = self._tile_shapes.get(key)
        if known is not None:
            return known
        shape = choose()
        with self._lock:
            return self._tile_shapes.setdefault(key, shape)

    def speed(self, engine: str, precision: torch.dtype, /) -> float | None:
        """The speed :meth:`record_speed` holds for ``engine`` in ``precision``, or None before any job measured it."""
        with self._lock:
            return self._speeds.get((engine, str(precision)))

    def mark_failed(self, net: torch.nn.Module, /) -> None:
        """OpenVINO failed on ``net``'s current weights: keep them with PyTorch from now on."""
        with self._lock:
            self._failed.add(_fingerprint(net))

    def has_failed(self, net: torch.nn.Module, /) -> bool:
        """True if OpenVINO failed on ``net``'s current weights before."""
        with self._lock:
            return _fingerprint(net) in self._failed

    def __contains__(self, net: object) -> bool:
        with self._lock:
            return net in self._compiled

    def __repr__(self) -> str:
        return f"EngineCache({len(self._compiled)} converted, {len(self._torch_pixels)} counted)"


def _fingerprint(net: torch.nn.Module) -> tuple:
    """Identifies the weights: any in-place change (an optimiser step, load_state_dict) changes it."""
    return (id(net),) + tuple((name, t.data_ptr(), t._version) for name, t in net.state_dict(keep_vars=True).items())
