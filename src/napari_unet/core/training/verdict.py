"""What a fine-tuning run did, in words: the verdict the widget and the command line show.

The held-back annotation is a guard: it holds only what the model already
got right before training (see :mod:`napari_unet.core.training.held_back`),
so its score tells whether training broke something, and the corrections are
counted on their own (:class:`CorrectionCount`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Drop of the held-back score (F1 or IoU) that still counts as "no worse".
TOLERANCE = 0.02
#: Fewest complete objects a held-back region must hold to judge by (else nothing is held back).
MIN_HELD_BACK_OBJECTS = 5

Status = Literal["better", "same", "worse", "unjudged", "none"]


@dataclass(frozen=True)
class CorrectionCount:
    """Corrected objects that the model segments as painted, before and after training.

    Attributes
    ----------
    objects : int
        Annotated objects that the user corrected (they differ from the
        model's prediction before training).
    before, after : int
        How many of them the model matched (IoU above 0.5) before and after.
    """

    objects: int
    before: int
    after: int

    def sentence(self) -> str:
        """``"7 of 9 corrected objects are now segmented as painted (2 before)"``."""
        return (
            f"{self.after} of {self.objects} corrected object{'s' if self.objects != 1 else ''} "
            f"{'is' if self.after == 1 else 'are'} now segmented as painted ({self.before} before)"
        )


@dataclass(frozen=True)
class Verdict:
    """The judgement of a fine-tuning run on its held-back annotation.

    Attributes
    ----------
    status : {"better", "same", "worse", "unjudged", "none"}
        ``worse``: every trained model scored below the starting model by
        more than :data:`TOLERANCE`, so the result *is* the starting model;
        ``unjudged``: too few held-back objects to judge by; ``none``: nothing
        was held back.
    metric_name : str
        ``"F1@0.5"`` or ``"mean IoU"`` (empty without validation).
    before, after : float or None
        The held-back score of the starting model and of the result.
    objects : int
        Held-back objects scored (0 for models without objects).
    worst : float or None
        ``worse`` only: the best score a trained model reached.
    corrections : CorrectionCount or None
        The corrected objects, when they were counted.
    """

    status: Status
    metric_name: str = ""
    before: float | None = None
    after: float | None = None
    objects: int = 0
    worst: float | None = None
    corrections: CorrectionCount | None = None

    @property
    def kept_previous(self) -> bool:
        """True when the result is the starting model because training made it worse."""
        return self.status == "worse"

    def summary(self) -> str:
        """One line: the scores with 3 digits and the object count, or why there are none."""
        counted = f" on {self.objects} held-back object{'s' if self.objects != 1 else ''}" if self.objects else ""
        if self.status == "none":
            text = "Nothing was held back to check the result"
        elif self.status == "unjudged":
            text = f"Only {self.objects} held-back object(s): too few to judge by, so no score is given"
        elif self.status == "worse":
            text = (
                f"{self.metric_name} {_f(self.before)} → {_f(self.worst)} at best{counted}: worse, so the model "
                "as it was is kept"
            )
        elif self.before is None:
            text = f"{self.metric_name} {_f(self.after)}{counted} (trained from scratch: no 'before')"
        else:
            text = f"{self.metric_name} {_f(self.before)} → {_f(self.after)}{counted}"
        if self.corrections is not None and self.corrections.objects:
            text += "; " + self.corrections.sentence()
        return text + "."

    def warning(self) -> str:
        """What the user must know (``""`` when all is well)."""
        if self.status == "worse":
            return (
                f"Training made the model worse on the held-back annotation ({self.metric_name} "
                f"{_f(self.before)} → {_f(self.worst)} at best{', ' + str(self.objects) + ' objects' if self.objects else ''}), "
                "so the result is the model as it was. Correct more of the image (or more images), or train "
                "with a lower learning rate."
            )
        if (
            self.corrections is not None
            and self.corrections.objects
            and self.corrections.after < self.corrections.objects
        ):
            missing = self.corrections.objects - self.corrections.after
            if missing * 2 > self.corrections.objects:
                return (
                    f"Most corrections did not stick: {self.corrections.sentence()}. Train longer, or correct "
                    "the same kind of mistake in more places."
                )
        return ""


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def judge(
    *,
    metric_name: str,
    before: float | None,
    after: float | None,
    objects: int,
    reverted_from: float | None,
    held_back: bool,
    min_objects: int,
) -> Verdict:
    """The verdict of a run from its held-back scores.

    Parameters
    ----------
    metric_name : str
        As for :class:`Verdict`.
    before, after : float or None
        Score of the starting model and of the result.
    objects : int
        Held-back objects (0 for models without objects).
    reverted_from : float or None
        The best score of a trained model when every one was worse than
        ``before`` (the result is then the starting model); else None.
    held_back : bool
        Whether anything was held back.
    min_objects : int
        Fewest objects to judge by (ignored for models without objects).
    """
    if not held_back or after is None:
        return Verdict("none")
    if metric_name == "F1@0.5" and objects < min_objects:
        return Verdict("unjudged", metric_name, objects=objects)
    if reverted_from is not None:
        return Verdict("worse", metric_name, before, after, objects, worst=reverted_from)
    if before is not None and after > before:
        return Verdict("better", metric_name, before, after, objects)
    return Verdict("same", metric_name, before, after, objects)
