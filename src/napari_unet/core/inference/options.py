"""How to run the network, in one frozen object shared by every segmentation path.

:class:`InferenceOptions` holds the settings that decide *how* an image is
predicted (device, tile and batch size, mixed precision, engine) and the
:class:`~napari_unet.core.inference.engine.EngineCache` that remembers engine
choices between calls. The whole-image (:func:`~napari_unet.core.segment`),
block-by-block (:func:`~napari_unet.core.segment_to_zarr`) and batch
(``segment_files``, ``segment_files_to_zarr``) paths take it as ``options=``,
so the same object gives the same labels on all of them.

What describes the *image* (its channel axis, RGB, pixel size) stays an
argument next to the image: a batch reads it from each file. The object
``diameter`` setting is here: it says how to find the scale (``"auto"``
estimates it per image), see :mod:`napari_unet.core.inference.object_scale`.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

from napari_unet.core.errors import UserError
from napari_unet.core.inference.engine import ENGINES, EngineCache
from napari_unet.core.inference.object_scale import check_diameter

__all__ = ["INFERENCE_KEYWORDS", "InferenceOptions", "OptionsError", "inference_options"]

#: The keyword arguments that the segmentation functions accept as a shorthand for ``options=``.
INFERENCE_KEYWORDS = ("device", "tile_size", "batch_size", "amp", "engine", "diameter")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OptionsError(UserError, ValueError):
    """An inference setting that cannot be used; the message says which values can."""


@dataclass(frozen=True)
class InferenceOptions:
    """Settings of a segmentation run, checked when made.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}
        Where to run; ``"auto"`` picks CUDA, then MPS, then the CPU. An
        accelerator that is not there falls back to the CPU with a warning.
    tile_size : int, optional
        Largest network input side in pixels (at least 1; tiles are never
        smaller than the network needs); chosen from free memory if omitted.
    batch_size : int, optional
        Tiles per network call (at least 1); chosen from free memory if omitted.
    amp : bool
        Mixed precision where the device has fast half precision: bfloat16
        (or float16) on CUDA, bfloat16 on CPUs with AMX or AVX512-BF16 units
        (``NAPARI_UNET_CPU_AMP=off`` keeps float32 there); float32
        elsewhere. False computes in float32 everywhere (see
        :func:`~napari_unet.core.inference.device.compute_dtype`).
    engine : {"auto", "torch", "openvino"}
        What runs the network on the CPU (see
        :mod:`napari_unet.core.inference.engine`).
    diameter : float or {"auto", "model", "calibration"}
        The objects' size: ``"auto"`` estimates it from each image, a number
        is their diameter in image pixels, ``"model"`` takes them to be the
        size the model was trained at (the image as it is), ``"calibration"``
        derives it from the image's and the model's pixel sizes. The image is
        resampled so its objects have the model's size (see
        :mod:`napari_unet.core.inference.object_scale`). Text holding a
        number is read as that number.
    engine_cache : EngineCache, optional
        Remembers converted networks and the work done under ``"auto"``
        between calls; its owner (a viewer session, a command) keeps it. A
        job given none starts with an empty one, so its results never depend
        on what ran before in the process. Not compared, not shown.

    Raises
    ------
    OptionsError
        For a value out of range, with the values that are accepted.
    DiameterError
        For a diameter that is not a positive number or a setting's name.

    Examples
    --------
    >>> InferenceOptions(device="cpu", tile_size=256).engine
    'auto'
    >>> InferenceOptions(batch_size=0)
    Traceback (most recent call last):
    ...
    napari_unet.core.inference.options.OptionsError: batch_size must be a whole number of at least 1 (or None \
for automatic), got 0
    """

    device: str = "auto"
    tile_size: int | None = None
    batch_size: int | None = None
    amp: bool = True
    engine: str = "auto"
    diameter: float | str = "auto"
    engine_cache: EngineCache | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        device = str(self.device).strip().lower()
        if not _DEVICE.match(device):
            raise OptionsError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        object.__setattr__(self, "device", device)
        _check_count(self, "tile_size", 1)
        _check_count(self, "batch_size", 1)
        if not isinstance(self.amp, bool):
            raise OptionsError(f"amp must be True or False, got {self.amp!r}")
        if self.engine not in ENGINES:
            raise OptionsError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        object.__setattr__(self, "diameter", check_diameter(self.diameter))
        if self.engine_cache is not None and not isinstance(self.engine_cache, EngineCache):
            raise OptionsError(f"engine_cache must be an EngineCache, got {type(self.engine_cache).__name__}")

    def with_cache(self) -> InferenceOptions:
        """These options with an engine cache: their own, or a new empty one."""
        if self.engine_cache is not None:
            return self
        return _replace(self, engine_cache=EngineCache())

    def plane_keywords(self) -> dict[str, Any]:
        """The keywords of :func:`~napari_unet.core.inference.predict.predict_plane_job` these options set."""
        return {
            "tile_size": self.tile_size,
            "batch_size": self.batch_size,
            "amp": self.amp,
            "engine": self.engine,
            "engine_cache": self.engine_cache,
        }

    def without_cache(self) -> InferenceOptions:
        """These options without their cache (to send to another process, which keeps its own)."""
        return _replace(self, engine_cache=None)


def inference_options(options: InferenceOptions | None = None, /, **keywords: Any) -> InferenceOptions:
    """The options of a call: ``options``, or built from the shorthand keywords (None = not given).

    Raises
    ------
    TypeError
        Both ``options`` and a shorthand keyword were given, or an unknown keyword.
    OptionsError
        A keyword's value is out of range.
    """
    unknown = sorted(set(keywords) - set(INFERENCE_KEYWORDS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    given = {name: value for name, value in keywords.items() if value is not None}
    if options is None:
        return InferenceOptions(**given)
    if not isinstance(options, InferenceOptions):
        raise TypeError(f"options must be an InferenceOptions, got {type(options).__name__}")
    if given:
        raise TypeError(f"give either options= or {', '.join(f'{k}=' for k in given)}, not both")
    return options


def _check_count(options: InferenceOptions, name: str, smallest: int) -> None:
    value = getattr(options, name)
    if value is None:
        return
    try:
        number = operator.index(value)  # ints and numpy integers, not floats or bools
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < smallest:
        raise OptionsError(
            f"{name} must be a whole number of at least {smallest} (or None for automatic), got {value!r}"
        )
    object.__setattr__(options, name, int(number))


def _replace(options: InferenceOptions, **changes: Any) -> InferenceOptions:
    from dataclasses import replace

    return replace(options, **changes)
