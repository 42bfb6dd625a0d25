"""Which part of the annotation is held back to check that fine-tuning does no harm.

Three rules make the check honest and keep what the user taught:

- **Never what the user corrected.** Pixels where the annotation differs from
  the model's own prediction (a sample's ``corrected`` mask), with a margin of
  :data:`CORRECTION_MARGIN` pixels, and every object that touches them, are
  always trained on. The held-back region is annotation the model already got
  right, so its score shows whether training broke what worked (a guard
  against forgetting), not whether the corrections were learnt (that is
  counted separately, on the corrected objects themselves).
- **Never half an object.** The region is drawn along object boundaries:
  an object that crosses its edge is given to training whole, so the region
  holds only complete objects, and it is scored inside itself only
  (:func:`~napari_unet.core.training.metrics.region_match`).
- **Not at all when too little would remain.** With fewer than
  :data:`MIN_HELD_BACK_OBJECTS` objects in the region there is nothing to
  judge by, so nothing is held back and all annotation is trained on.

With three or more planes, whole planes are held back, those with the fewest
corrections first. With one or two, a band of each plane (the bottom, top,
right or left ``fraction`` of its annotated extent, whichever holds the most
objects once the rules above are applied) is held back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from napari_unet.core.training.annotations import IGNORE, TrainingTarget
from napari_unet.core.training.loop import TrainingSample
from napari_unet.core.training.verdict import MIN_HELD_BACK_OBJECTS

#: Pixels around a correction that are never held back.
CORRECTION_MARGIN = 4
#: Fewest pixels a held-back region of a model without objects must have.
MIN_HELD_BACK_PIXELS = 256


def hold_back_planes(
    samples: Sequence[TrainingSample], /, *, fraction: float, seed: int
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Hold back whole planes, ``fraction`` of them (at least one), the least corrected first.

    Ties are broken at random with ``seed``. The held-back samples' region is
    their annotated pixels.
    """
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(samples))
    corrections = [0 if s.corrected is None else int(s.corrected.sum()) for s in samples]
    order = sorted(shuffled, key=lambda i: corrections[i])
    n_val = max(1, int(round(fraction * len(samples))))
    held = set(int(i) for i in order[:n_val])
    train = [s for i, s in enumerate(samples) if i not in held]
    val = [replace(s, region=s.target.annotated.copy()) for i, s in enumerate(samples) if i in held]
    return train, val


def hold_back_band(sample: TrainingSample, /, *, fraction: float) -> tuple[TrainingSample, TrainingSample | None]:
    """Split one plane into a training part and a held-back band (None: nothing held back).

    Returns
    -------
    train : TrainingSample
        ``sample`` with the held-back region ignored.
    held : TrainingSample or None
        The held-back part, its ``region`` set; None when no band keeps
        enough objects (or pixels) to judge by.
    """
    best: tuple[int, np.ndarray] | None = None
    for band in _bands(sample.target.annotated, fraction):
        region = held_back_region(sample, band)
        size = _objects_in(sample.instances, region) if sample.instances is not None else int(region.sum())
        if best is None or size > best[0]:
            best = (size, region)
    enough = MIN_HELD_BACK_OBJECTS if sample.instances is not None else MIN_HELD_BACK_PIXELS
    if best is None or best[0] < enough:
        return sample, None
    region = best[1]
    train = replace(sample, target=_masked(sample.target, ~region), name=f"{sample.name} (trained part)")
    held = replace(
        sample,
        target=_masked(sample.target, region),
        region=region,
        corrected=None,
        name=f"{sample.name} (held back)",
    )
    return train, held


def held_back_region(sample: TrainingSample, band: np.ndarray, /) -> np.ndarray:
    """The part of ``band`` that may be held back: annotated, no correction near, no object cut."""
    region = band & sample.target.annotated
    if sample.corrected is not None and sample.corrected.any():
        near = ndimage.binary_dilation(sample.corrected, iterations=CORRECTION_MARGIN)
        region &= ~near
    if sample.instances is not None:
        objects = sample.instances
        cut = np.unique(objects[~region & (objects > 0)])
        region &= ~np.isin(objects, cut)
    return region


def _objects_in(instances: np.ndarray, region: np.ndarray) -> int:
    """Objects with a pixel in ``region`` (the region never cuts one)."""
    ids = np.unique(instances[region])
    return int((ids != 0).sum())


def _bands(annotated: np.ndarray, fraction: float) -> list[np.ndarray]:
    """Candidate bands: the bottom, top, right and left ``fraction`` of the annotated extent."""
    bands = []
    for axis in (0, 1):
        along = np.flatnonzero(annotated.any(axis=1 - axis))
        if len(along) < 8:
            continue
        first, last = int(along[0]), int(along[-1]) + 1
        n = max(1, int(round(fraction * (last - first))))
        for start, stop in ((last - n, last), (first, first + n)):
            band = np.zeros(annotated.shape, bool)
            if axis == 0:
                band[start:stop] = True
            else:
                band[:, start:stop] = True
            bands.append(band)
    return bands


def _masked(target: TrainingTarget, keep: np.ndarray) -> TrainingTarget:
    """``target`` with the pixels outside ``keep`` ignored."""
    return TrainingTarget(
        np.where(keep, target.classes, IGNORE),
        np.where(keep, target.weights, 0).astype(np.float32),
    )


def held_back_masks(validation: Sequence[TrainingSample], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The held-back region of each image, as a boolean mask shaped like its labels.

    Parameters
    ----------
    validation : sequence of TrainingSample
        Held-back samples (their ``source``, ``plane`` and ``region``).
    shapes : dict
        Labels shape of each image, by name.
    """
    masks: dict[str, np.ndarray] = {}
    for s in validation:
        if s.region is None or s.source not in shapes:
            continue
        mask = masks.setdefault(s.source, np.zeros(shapes[s.source], bool))
        mask[s.plane] |= s.region
    return masks


def describe_region(mask: np.ndarray, /) -> str:
    """Where a held-back mask lies, in words: ``"rows 416-519, columns 0-695"`` (planes for stacks)."""
    if not mask.any():
        return "nothing"
    parts = []
    if mask.ndim > 2:
        planes = np.flatnonzero(mask.reshape(-1, *mask.shape[-2:]).any(axis=(1, 2)))
        parts.append("plane(s) " + ", ".join(str(int(p)) for p in planes[:10]) + (" ..." if len(planes) > 10 else ""))
    flat = np.asarray(mask.reshape(-1, *mask.shape[-2:]).any(axis=0))
    rows, cols = np.flatnonzero(flat.any(axis=1)), np.flatnonzero(flat.any(axis=0))
    parts.append(f"rows {rows[0]}-{rows[-1]}, columns {cols[0]}-{cols[-1]}")
    return "; ".join(parts)
