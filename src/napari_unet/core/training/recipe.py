"""Defaults that depend on how a model is trained, shared by the widget, the command line and the benchmarks."""

from __future__ import annotations

#: AdamW learning rate for fine-tuning a trained model (small steps keep what it knows).
FINE_TUNE_LEARNING_RATE = 3e-4
#: AdamW learning rate for training from freshly initialised weights.
FROM_SCRATCH_LEARNING_RATE = 1e-3


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
