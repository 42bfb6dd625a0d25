"""How much to resample an image so its objects have the size the model was trained at.

A model records the median diameter of its training objects
(:attr:`~napari_unet.core.network.model_file.ModelDescription.object_diameter_px`).
The *diameter setting* of a segmentation says how big the objects of the
user's image are:

``"auto"`` (default)
    Estimated from the image: a pass at the image's own scale finds objects
    (at :data:`PROBE_FACTORS` when it finds too few), their median diameter
    gives the factor, and a pass at that scale is the result (a coarse look
    checks that small estimates are not fragments of much larger objects). When the estimate is within
    :data:`TOLERANCE` of the model's size the image is used as it is, and the
    estimating pass is the result (no extra work). When no objects are found,
    the model's own size is assumed and the result says so.
a number
    The objects' diameter in image pixels.
``"model"``
    The objects already have the model's size: no resampling.
``"calibration"``
    From the pixel sizes of the image and of the model's training data.

The factor is the model's diameter over the objects' diameter, kept within
[:data:`MIN_FACTOR`, :data:`MAX_FACTOR`] and so that an enlarged plane has at most
:data:`MAX_SCALED_PIXELS` pixels. A model that does not record its
object size is applied to images as they are (``"auto"``) or refuses a
number (which it could not use).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from napari_unet.core.errors import UserError
from napari_unet.core.inference.plane_outputs import PlaneOutputs, plane_outputs_job
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.object_size import equivalent_diameters
from napari_unet.core.progress import Job, Progress, Stage, relayed, within

__all__ = [
    "DIAMETER_WORDS",
    "MAX_FACTOR",
    "MIN_FACTOR",
    "DiameterError",
    "ObjectScale",
    "check_diameter",
    "choose_scale_job",
    "scale_from_diameter",
]

#: The words a diameter setting may be, besides a number of pixels.
DIAMETER_WORDS = ("auto", "model", "calibration")
#: Resampling factors are kept within these (beyond them the network sees too little or too much).
MIN_FACTOR, MAX_FACTOR = 1 / 8, 8.0
#: Estimates within this ratio of the model's size leave the image as it is.
TOLERANCE = 1.25
#: Passes an estimate may take (the first at the image's own scale).
MAX_PASSES = 3
#: The coarse look for objects much larger than the model's, and how much larger they must look.
COARSE_FACTOR, LARGER = 1 / 3, 2.0
#: The coarse look follows every first pass at the image's scale, unless an enlarged pass that it asked for
#: holds the objects. Large nuclei at their own scale come out as fragments of about, or below, the model's
#: size: at 3x, taking it only when the first pass asked for no resampling gave AP@0.5 0.249 instead of
#: 0.714-0.726 (``benchmarks/object_size.py``).
#: An enlarged pass whose objects are this much smaller than the model's are fragments of texture.
FRAGMENT_RATIO = 1.5
#: Largest plane (pixels) an image is enlarged to; a larger factor is cut to fit (memory and time).
MAX_SCALED_PIXELS = 32 * 2**20
#: Fewest objects (not cut by the edge) that make an estimate. A first pass with fewer, not small ones
#: leaves the image as it is (the few whole cells of a 512 px crop of Fluo-C2DL-MSC gave a 1.7x too large
#: estimate); with none, or only small ones, it asks for the probe scales (small nuclei at 0.5x).
MIN_OBJECTS = 5
#: Scales tried when the image's own scale finds too few objects: big objects, then small ones.
PROBE_FACTORS = (1 / 3, 3.0)
#: Largest side, in pixels at the scale tried, of the part of a plane an estimate looks at.
ESTIMATE_SIDE = 2048

Source = Literal["auto", "given", "model", "calibration", "fallback", "unknown"]


class DiameterError(UserError, ValueError):
    """A diameter setting that cannot be used; the message says which can."""


@dataclass(frozen=True)
class ObjectScale:
    """The object size a segmentation used.

    Attributes
    ----------
    factor : float
        The image was resampled by this before the network saw it (1: not).
    diameter : float or None
        The objects' diameter in image pixels that was used (None when the
        model does not record its own and none was given).
    model_diameter : float or None
        The model's object size in pixels.
    source : {"auto", "given", "model", "calibration", "fallback", "unknown"}
        Where ``diameter`` came from: estimated, given by the user, the
        model's own, from the pixel sizes, the model's own because the
        estimate found no objects, or not known.
    note : str
        A sentence for the user.
    """

    factor: float
    diameter: float | None
    model_diameter: float | None
    source: Source
    note: str

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a results table or a model's history."""
        return asdict(self)


def check_diameter(value: Any, /) -> float | str:
    """A diameter setting as given by a user: a word of :data:`DIAMETER_WORDS` or a positive number.

    Text holding a number (from a command line) is read as that number.

    Raises
    ------
    DiameterError
        Zero, negative, NaN, infinite, or a word that is not a setting.

    Examples
    --------
    >>> check_diameter("Auto"), check_diameter("25"), check_diameter(12)
    ('auto', 25.0, 12.0)
    >>> check_diameter(0)
    Traceback (most recent call last):
    ...
    napari_unet.core.inference.object_scale.DiameterError: the object diameter must be a positive number of \
pixels, or auto, model or calibration; got 0
    """
    words = ", ".join(DIAMETER_WORDS[:-1]) + f" or {DIAMETER_WORDS[-1]}"
    wrong = DiameterError(f"the object diameter must be a positive number of pixels, or {words}; got {value!r}")
    if isinstance(value, str):
        word = value.strip().lower()
        if word in DIAMETER_WORDS:
            return word
        try:
            value = float(word)
        except ValueError:
            raise wrong from None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise wrong
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise wrong
    return number


def scale_from_diameter(
    diameter: float, model: SegmentationModel, /, *, plane_shape: tuple[int, int], source: Source = "given"
) -> ObjectScale:
    """The scale for objects of ``diameter`` image pixels.

    Raises
    ------
    DiameterError
        The diameter is larger than the image, or the model does not record
        its object size (so a diameter cannot be matched to it).
    """
    if diameter > max(plane_shape):
        raise DiameterError(
            f"an object diameter of {diameter:g} px is larger than the image ({plane_shape[1]} x {plane_shape[0]} "
            "px); give the diameter of one object, in pixels, or auto"
        )
    model_d = model.description.object_diameter_px
    if model_d is None:
        raise DiameterError(
            f"the model {model.description.name!r} does not record the object size it was trained at, so a "
            "diameter cannot be matched to it; use auto or model (the image as it is), or fine-tune it "
            "(fine-tuned models record the size)"
        )
    factor = _clamped(model_d / diameter, plane_shape)
    how = {"given": "given", "calibration": "from the pixel sizes", "auto": "estimated"}.get(source, source)
    return ObjectScale(factor, float(diameter), model_d, source, _note(factor, diameter, model_d, how))


def choose_scale_job(
    plane: Any,
    model: SegmentationModel,
    /,
    *,
    setting: float | str,
    device: torch.device,
    pixel_size: float | None = None,
    stats: np.ndarray | None = None,
    **plane_keywords: Any,
) -> Job[tuple[ObjectScale, PlaneOutputs | None]]:
    """The object scale of a segmentation, estimated from ``plane`` when the setting is ``"auto"``.

    Parameters
    ----------
    plane : array-like
        A (Y, X, C) plane of the image (a stack's middle plane).
    model : SegmentationModel
        The model.
    setting : float or str
        A checked setting (:func:`check_diameter`).
    device : torch.device
        Where estimating passes run.
    pixel_size : float, optional
        The image's pixel size in micrometres (``"calibration"`` only).
    stats : numpy.ndarray, optional
        The plane's normalisation statistics.
    **plane_keywords
        Tile size, batch size, mixed precision, engine, engine cache.

    Yields
    ------
    Progress
        :attr:`Stage.OBJECT_SIZE` before each estimating pass, and its tiles.

    Returns
    -------
    tuple
        The :class:`ObjectScale`, and the last estimating pass when it
        covered the whole plane at the chosen factor (the caller uses it
        instead of predicting the plane again), else None.
    """
    shape = (int(plane.shape[0]), int(plane.shape[1]))
    model_d = model.description.object_diameter_px
    separates = model.description.instance_rule.method != "none"
    if setting == "model" or (setting == "auto" and (model_d is None or not separates)):
        if model_d is None:
            note = f"the model {model.description.name!r} does not record its object size; the image is used as it is"
            return ObjectScale(1.0, None, None, "unknown", note), None
        return ObjectScale(
            1.0, model_d, model_d, "model", f"objects taken to be the model's size ({model_d:.0f} px)"
        ), None
    if setting == "calibration":
        return scale_from_diameter(_calibrated(model, pixel_size), model, plane_shape=shape, source="calibration"), None
    if setting != "auto":
        return scale_from_diameter(float(setting), model, plane_shape=shape), None
    assert model_d is not None
    estimate = _estimate_job(plane, model, model_d, shape, device=device, stats=stats, **plane_keywords)
    return (yield from _never_back(estimate))


def _never_back(job: Job[Any]) -> Job[Any]:
    """``job``'s reports with the fraction held where it was when a later pass starts lower."""
    highest = 0.0

    def held(report: Progress) -> Progress:
        nonlocal highest
        if report.fraction < highest:
            report = replace(report, done=0, total=0, plane=0, n_planes=1, span=(highest, highest))
        highest = report.fraction
        return report

    return (yield from relayed(job, held))


@dataclass(frozen=True)
class _Pass:
    """One estimating pass: its outputs, the diameters of its whole objects, and whether it covered the plane."""

    outputs: PlaneOutputs
    whole: np.ndarray
    covers_plane: bool

    @property
    def size(self) -> float | None:
        """Median diameter of the whole objects; None when fewer than :data:`MIN_OBJECTS`."""
        return float(np.median(self.whole)) if self.whole.size >= MIN_OBJECTS else None

    def result(self) -> PlaneOutputs | None:
        """The outputs, when they can stand for the plane's result."""
        return self.outputs if self.covers_plane else None


def _pass_job(
    plane: Any,
    model: SegmentationModel,
    factor: float,
    shape: tuple[int, int],
    stats: np.ndarray,
    *,
    start: float,
    stop: float,
    device: torch.device,
    **plane_keywords: Any,
) -> Job[_Pass]:
    """Predict (the middle of) a plane at ``factor`` as the part ``[start, stop]`` of the estimate, and measure it."""
    region = _central_region(shape, factor, step=model.config.downsampling)
    outputs = yield from within(
        plane_outputs_job(plane, model, factor=factor, device=device, stats=stats, region=region, **plane_keywords),
        start=start,
        stop=stop,
    )
    # sized with the most probable class, as the estimate was tuned: a calibrated foreground
    # threshold drops the unsure pixels of a pass at a wrong scale, and its objects fall apart
    # (and seeds by the most probable class too, as the estimate was tuned before seeds were fitted)
    sizing = replace(model.description.instance_rule, foreground_threshold=None, seed_threshold=None)
    return _Pass(outputs, equivalent_diameters(outputs.instances_under(sizing), exclude_border=True), region is None)


def _estimate_job(
    plane: Any,
    model: SegmentationModel,
    model_d: float,
    shape: tuple[int, int],
    *,
    device: torch.device,
    stats: np.ndarray | None,
    **plane_keywords: Any,
) -> Job[tuple[ObjectScale, PlaneOutputs | None]]:
    """Passes that estimate the size; the last one, when at the chosen scale, is the result.

    The first pass is at the image's own scale (at the probe scales when it
    finds no objects, or only a few small ones). A second look follows it
    (:func:`_second_look_job`): enlarged when the estimate asks for it, then,
    unless that pass holds the objects, a coarse look at a third of the size
    (objects far larger than the model's come out of the first pass as
    model-sized fragments). Objects
    larger than the model's are cut into pieces, so an estimate is too
    small: while it asks to
    shrink the image further, another pass at the smaller scale measures
    again (up to :data:`MAX_PASSES`). An estimate that asks to enlarge the
    image is used as it is: on an enlarged image the model finds ever
    smaller fragments of texture, and iterating would run away (measured on
    the DSB 2018 val images at 0.5x to 3x, ``benchmarks/object_size.py``).
    """
    if stats is None:
        stats = model.description.normalization.statistics(plane)
    probes = [1.0, *PROBE_FACTORS]
    factor, estimate, passes = probes.pop(0), None, 0
    while passes < MAX_PASSES:
        yield Progress(Stage.OBJECT_SIZE, done=passes, total=MAX_PASSES, message="estimating the object size")
        done = yield from _pass_job(
            plane,
            model,
            factor,
            shape,
            stats,
            start=passes / MAX_PASSES,
            stop=(passes + 1) / MAX_PASSES,
            device=device,
            **plane_keywords,
        )
        passes += 1
        found = done.size
        if found is None:
            if estimate is None and factor == 1.0 and done.whole.size and np.median(done.whole) * TOLERANCE >= model_d:
                # a few objects, not small ones: too few to tell how much to shrink the image
                return _too_few(done.whole.size, model_d, done.result())
            if estimate is not None or not probes:
                break  # a shrunk image lost its objects: keep the last estimate
            factor = probes.pop(0)
            continue
        estimate, probes = found, []
        chosen = _chosen_factor(model_d / estimate, shape)
        enlarged = None
        if passes == 1 and factor == 1.0:  # are these objects, or fragments of much larger ones?
            settled, enlarged = yield from _second_look_job(
                plane, model, done, estimate, chosen, shape, stats, device=device, **plane_keywords
            )
            if settled is not None:
                return settled
        if _same(chosen, factor):  # this pass was at the right scale: it is the result
            scale = ObjectScale(factor, estimate, model_d, "auto", _note(factor, estimate, model_d, "estimated"))
            return scale, done.result()
        if chosen > factor:  # enlarge: checked once, not iterated (see above)
            return (
                yield from _enlarged_job(
                    plane,
                    model,
                    done,
                    factor,
                    estimate,
                    chosen,
                    shape,
                    stats,
                    enlarged=enlarged,
                    device=device,
                    **plane_keywords,
                )
            )
        factor = chosen
    if estimate is None:
        note = f"no objects were found to estimate their size; the model's own size ({model_d:.0f} px) was used"
        return ObjectScale(1.0, model_d, model_d, "fallback", note), None
    chosen = _chosen_factor(model_d / estimate, shape)
    return ObjectScale(chosen, estimate, model_d, "auto", _note(chosen, estimate, model_d, "estimated")), None


def _second_look_job(
    plane: Any,
    model: SegmentationModel,
    first: _Pass,
    estimate: float,
    chosen: float,
    shape: tuple[int, int],
    stats: np.ndarray,
    *,
    device: torch.device,
    **plane_keywords: Any,
) -> Job[tuple[tuple[ObjectScale, PlaneOutputs | None] | None, _Pass | None]]:
    """After the first pass at the image's scale: small objects enlarged, else a coarse look for large ones.

    When the estimate asks to enlarge the image, the enlarged pass comes
    first: if it finds more whole objects than the first pass, of about the
    model's size there, they are objects, and it is the result. The coarse
    look can merge clusters of small nuclei into cell-sized objects: the
    brightfield DSB 2018 image 4217e2 at 0.5x was shrunk x0.38 and none of its
    nuclei found, and is now enlarged x1.41 (47 of 132 found; the other such
    image, 5d5860, still fails the enlarged pass and is shrunk). AP@0.5 on the
    67 grayscale val images at 0.5x: 0.666 -> 0.683 with this order, the same
    at 1x and 3x (``benchmarks/object_size.py``). Otherwise the coarse look
    (:func:`_coarse_check_job`) tells whether the first pass found fragments
    of much larger objects.

    Returns
    -------
    tuple
        The settled scale and outputs (None: the first estimate stands), and
        the enlarged pass when one was made (for :func:`_enlarged_job`).
    """
    model_d = model.description.object_diameter_px or estimate
    keywords = {"device": device, **plane_keywords}
    enlarged = None
    if chosen > 1.0:
        enlarged = yield from _pass_job(
            plane, model, chosen, shape, stats, start=1 / MAX_PASSES, stop=1.5 / MAX_PASSES, **keywords
        )
        found = enlarged.size
        if (
            found is not None
            and enlarged.whole.size > first.whole.size
            and model_d / FRAGMENT_RATIO <= found * chosen <= model_d * FRAGMENT_RATIO
        ):
            scale = ObjectScale(chosen, found, model_d, "auto", _note(chosen, found, model_d, "estimated"))
            return (scale, enlarged.result()), enlarged
    larger = yield from _coarse_check_job(plane, model, estimate, shape, stats, **keywords)
    return larger, enlarged


def _coarse_check_job(
    plane: Any,
    model: SegmentationModel,
    estimate: float,
    shape: tuple[int, int],
    stats: np.ndarray,
    *,
    device: torch.device,
    **plane_keywords: Any,
) -> Job[tuple[ObjectScale, PlaneOutputs | None] | None]:
    """Objects far larger than the model's look, at the image's scale, like many model-sized fragments.

    A look at :data:`COARSE_FACTOR` (a ninth of the work) finds them whole: when
    its objects are at least :data:`LARGER` times the first estimate, a pass at
    the scale they ask for is kept if its objects have about the model's size
    there. None: the first estimate stands.
    """
    model_d = model.description.object_diameter_px or estimate
    keywords = {"device": device, **plane_keywords}
    coarse = yield from _pass_job(
        plane, model, COARSE_FACTOR, shape, stats, start=1 / MAX_PASSES, stop=1.5 / MAX_PASSES, **keywords
    )
    found = coarse.size
    if found is None or found < LARGER * estimate:
        return None
    chosen = _chosen_factor(model_d / found, shape)
    check = yield from _pass_job(plane, model, chosen, shape, stats, start=1.5 / MAX_PASSES, stop=1.0, **keywords)
    again = check.size
    if again is None or not model_d / FRAGMENT_RATIO <= again * chosen <= model_d * FRAGMENT_RATIO:
        return None
    return ObjectScale(chosen, again, model_d, "auto", _note(chosen, again, model_d, "estimated")), check.result()


def _enlarged_job(
    plane: Any,
    model: SegmentationModel,
    before: _Pass,
    factor: float,
    estimate: float,
    chosen: float,
    shape: tuple[int, int],
    stats: np.ndarray,
    *,
    device: torch.device,
    enlarged: _Pass | None = None,
    **plane_keywords: Any,
) -> Job[tuple[ObjectScale, PlaneOutputs | None]]:
    """The pass at an enlarging factor, kept only if its objects have about the model's size there.

    On textured images the model finds small fragments; enlarged, they stay
    fragments, far smaller than the model's objects. Then the estimate was
    wrong, and the image is used at the scale of the estimating pass. Unless
    the enlarged pass found more whole objects than the estimating one: then
    the estimate was too large (objects below the minimum size were not
    counted; a DSB 2018 image at 0.5x, nuclei 6 px across, was estimated at
    12 px), and one more pass, enlarged as the new estimate asks, is kept on
    the same condition.
    """
    model_d = model.description.object_diameter_px or estimate
    if enlarged is None:
        enlarged = yield from _pass_job(
            plane, model, chosen, shape, stats, start=1.5 / MAX_PASSES, stop=1.0, device=device, **plane_keywords
        )
    found = enlarged.size
    if found is not None and found * chosen >= model_d / FRAGMENT_RATIO:
        return ObjectScale(
            chosen, found, model_d, "auto", _note(chosen, found, model_d, "estimated")
        ), enlarged.result()
    if found is not None and enlarged.whole.size > before.whole.size:
        again = _chosen_factor(model_d / found, shape)
        if again > chosen * TOLERANCE:
            second = yield from _pass_job(
                plane, model, again, shape, stats, start=1.0, stop=1.0, device=device, **plane_keywords
            )
            size = second.size
            if size is not None and size * again >= model_d / FRAGMENT_RATIO:
                return ObjectScale(again, size, model_d, "auto", _note(again, size, model_d, "estimated")), (
                    second.result()
                )
    seen = "no objects" if found is None else f"objects {found * chosen:.0f} px across"
    note = (
        f"objects {estimate:.0f} px across (estimated), model {model_d:.0f} px, but enlarged ×{chosen:.2f} the "
        f"model found {seen} (fragments, not objects): the image is used at ×{factor:.2f}"
    )
    return ObjectScale(factor, estimate, model_d, "auto", note), before.result()


def _too_few(whole: int, model_d: float, outputs: PlaneOutputs | None) -> tuple[ObjectScale, PlaneOutputs | None]:
    """A first pass that found objects, but too few whole ones to say their size: the image as it is."""
    note = (
        f"only {whole} whole objects were found, too few to estimate their size; the image is used as it is "
        f"(model {model_d:.0f} px): give the diameter to resample it"
    )
    return ObjectScale(1.0, None, model_d, "fallback", note), outputs


def _central_region(shape: tuple[int, int], factor: float, *, step: int) -> tuple[slice, slice] | None:
    """The middle part of a plane that is at most :data:`ESTIMATE_SIDE` at ``factor``; None: all of it.

    It starts on the network's pooling grid (multiples of ``step``), as a region predicted at the
    image's own scale must.
    """
    side = max(step, int(ESTIMATE_SIDE / factor))
    if shape[0] <= side and shape[1] <= side:
        return None
    parts = []
    for n in shape:
        size = min(n, side)
        start = (n - size) // 2 // step * step
        parts.append(slice(start, start + size))
    return (parts[0], parts[1])


def _chosen_factor(ratio: float, shape: tuple[int, int]) -> float:
    """The factor for a ratio of sizes: 1 within the tolerance, else the ratio within the limits."""
    if 1 / TOLERANCE <= ratio <= TOLERANCE:
        return 1.0
    return _clamped(ratio, shape)


def _clamped(factor: float, shape: tuple[int, int]) -> float:
    """``factor`` within [:data:`MIN_FACTOR`, :data:`MAX_FACTOR`], enlarging a plane to :data:`MAX_SCALED_PIXELS` at most."""
    largest = max(1.0, math.sqrt(MAX_SCALED_PIXELS / max(1, shape[0] * shape[1])))
    return float(min(MAX_FACTOR, largest, max(MIN_FACTOR, factor)))


def _same(a: float, b: float) -> bool:
    return a == b or 1 / TOLERANCE <= a / b <= TOLERANCE


def _calibrated(model: SegmentationModel, pixel_size: float | None) -> float:
    model_d, model_px = model.description.object_diameter_px, model.description.pixel_size_um
    if pixel_size is None:
        raise DiameterError(
            "the image has no pixel size, so the object size cannot come from calibration; "
            "give the diameter in pixels, or auto"
        )
    if model_d is None or model_px is None:
        raise DiameterError(
            f"the model {model.description.name!r} does not record the pixel size it was trained at; "
            "give the diameter in pixels, or auto"
        )
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise DiameterError(f"the image's pixel size must be a positive number of micrometres, got {pixel_size!r}")
    return model_d * model_px / pixel_size


def _note(factor: float, diameter: float, model_d: float, how: str) -> str:
    sizes = f"objects {diameter:.0f} px across ({how}), model {model_d:.0f} px"
    if factor == 1.0:
        return f"{sizes}: the image is used as it is"
    return f"{sizes}: the image was resampled ×{factor:.2f}"
