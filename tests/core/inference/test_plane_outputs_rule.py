"""Resampled results follow the model's foreground threshold on the image's grid too."""

from __future__ import annotations

import numpy as np

from core_helpers import tiny_model
from napari_unet.core.inference.plane_outputs import PlaneOutputs
from napari_unet.core.inference.resample import resample_probabilities
from napari_unet.core.network.instances import InstanceRule


def _bloated_object(size: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    foreground = np.clip(1 - (r - 2) / 8, 0, 1)
    interior = np.where(r < 2, 0.95, 0.0)
    return np.stack([1 - foreground, interior, foreground - interior]).astype(np.float32)


def _outputs(rule: InstanceRule, factor: float) -> PlaneOutputs:
    model = tiny_model(padding="same")
    model.description.instance_rule = rule
    probs = _bloated_object()
    shape = (round(probs.shape[1] / factor), round(probs.shape[2] / factor))
    return PlaneOutputs(probs, shape, (slice(None), slice(None)), factor, model)


def test_the_threshold_decides_the_outline_after_resampling_and_other_rules_are_not_kept():
    argmax = InstanceRule("seeded_watershed", [1, 2], [1])
    tight = argmax.with_foreground_threshold(0.8)
    for factor in (1.0, 0.5):
        outputs = _outputs(tight, factor)
        here = resample_probabilities(outputs.probabilities_at_scale, outputs.shape)
        labels = outputs.labels("instances")
        assert labels.max() == 1
        np.testing.assert_array_equal(labels > 0, here[1:].sum(0) > 0.8)
        wide = outputs.instances_under(argmax)
        assert (wide > 0).sum() > 2 * (labels > 0).sum()
        np.testing.assert_array_equal(outputs.labels("instances"), labels)  # the model's own labels stay
