"""The session's training set: every image the user corrected, kept for the next Fine-tune.

Like Cellpose's folder of corrected images, the corrections of earlier rounds
are not lost when Segment writes a new result or a layer is deleted: each
Fine-tune that trained adds (or, for an image of the same name, replaces)
its annotated images here, and the next Fine-tune trains on all of them.
The set can be written to a folder of image/label TIFFs and read back
(:mod:`napari_unet.core.training.training_set`).

Qt-free; holds copies of the data, never layers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from psygnal import Signal

from napari_unet.core.training.finetune_job import AnnotatedImage


@dataclass(frozen=True)
class Correction:
    """One corrected image of the training set.

    Attributes
    ----------
    annotated : AnnotatedImage
        The image and a private copy of its labels.
    mode : {"corrections", "scribbles"}
        How the labels were painted.
    objects : int
        Corrected objects (distinct label values > 0) for corrections;
        painted pixels for scribbles.
    origin : str
        Where it came from: ``"this session"`` or the folder it was read from.
    """

    annotated: AnnotatedImage
    mode: str
    objects: int
    origin: str = "this session"

    @property
    def name(self) -> str:
        """The image's name (the key of the set)."""
        return self.annotated.name

    def describe(self) -> str:
        """One line for the widget's list: name, what was painted, where from."""
        what = f"{self.objects} object{'s' if self.objects != 1 else ''}"
        if self.mode == "scribbles":
            what = f"scribbles, {self.objects} painted pixels"
        origin = "" if self.origin == "this session" else f", from {self.origin}"
        return f"{self.name} ({what}{origin})"


def count_objects(labels: np.ndarray, mode: str) -> int:
    """Distinct label values above 0 (corrections) or painted pixels (scribbles) of ``labels``."""
    flat = np.asarray(labels).ravel()
    if mode == "scribbles":
        return int(np.count_nonzero(flat))
    if flat.size == 0:
        return 0
    top = int(flat.max())
    if flat.dtype.kind in "ui" and int(flat.min()) >= 0 and top < 2**24:
        return int(np.count_nonzero(np.bincount(flat, minlength=1)[1:]))  # much faster than np.unique
    return int(np.count_nonzero(np.unique(flat)))


class CorrectionSet:
    """Corrected images by name, in the order they were added.

    :attr:`changed` is emitted after every change.
    """

    changed = Signal()

    def __init__(self) -> None:
        self._items: dict[str, Correction] = {}

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[Correction]:
        """Every correction, oldest first."""
        return list(self._items.values())

    def put(self, images: Iterable[AnnotatedImage], *, mode: str, origin: str = "this session") -> None:
        """Add ``images`` (an image of a name already in the set replaces it)."""
        for image in images:
            self._items.pop(image.name, None)
            self._items[image.name] = Correction(image, mode, count_objects(image.labels, mode), origin)
        self.changed.emit()

    def remove(self, name: str) -> None:
        """Forget the image called ``name`` (nothing if there is none)."""
        if self._items.pop(name, None) is not None:
            self.changed.emit()

    def clear(self) -> None:
        """Forget every image."""
        if self._items:
            self._items.clear()
            self.changed.emit()

    def for_training(self, mode: str, *, besides: Sequence[str] = ()) -> list[AnnotatedImage]:
        """The annotated images painted in ``mode``, except those named in ``besides`` (trained on afresh)."""
        skip = set(besides)
        return [c.annotated for c in self._items.values() if c.mode == mode and c.name not in skip]
