"""The fine-tuning recipe, shared by the widget, the command line and the benchmarks.

The values were chosen by measurement (``benchmarks/corrections_stick.py``;
figures in ``docs/performance.md``, section *Corrections stick*): with them,
the corrections of one image are learnt within the default budget while
other images of the same kind keep their accuracy.
"""

from __future__ import annotations

from typing import Literal

#: AdamW learning rate for fine-tuning a trained model.
FINE_TUNE_LEARNING_RATE = 1e-3
#: AdamW learning rate for training from freshly initialised weights.
FROM_SCRATCH_LEARNING_RATE = 1e-3
#: Extra loss weight of pixels where the annotation differs from the model's own prediction.
MISTAKE_WEIGHT = 3.0
#: Probability that a training patch is centred on a corrected pixel (when there are corrections).
CORRECTION_FRACTION = 0.0
#: Strength of the pull toward the starting weights (L2-SP); 0: none.
ANCHOR_WEIGHT = 0.001
#: Learning-rate schedule after the warm-up: "constant" or "cosine" (to zero at the end of the budget).
SCHEDULE: Literal["constant", "cosine"] = "constant"
#: Side of the training patches (output pixels).
PATCH_SIZE = 128
#: Largest random stretch (and shrink) of each axis of a training patch; 1: none. With 1.1 three
#: Fluo-C2DL-MSC frames teach a model that holds up better on later and on degraded frames, while
#: PhC-U373 still fits in 5 minutes; 1.25 slowed that fit (docs/performance.md, *Zoom augmentation*).
ZOOM = 1.1
#: Largest decay of the moving average of the weights that training validates and returns; 0: none.
WEIGHT_AVERAGE = 0.998


def default_learning_rate(*, from_scratch: bool) -> float:
    """The AdamW learning rate to use when the user chose none.

    Parameters
    ----------
    from_scratch : bool
        True when the weights are re-initialised (or the model is new).

    Returns
    -------
    float
        :data:`FROM_SCRATCH_LEARNING_RATE` from scratch, else
        :data:`FINE_TUNE_LEARNING_RATE`.
    """
    return FROM_SCRATCH_LEARNING_RATE if from_scratch else FINE_TUNE_LEARNING_RATE
