"""The moving average of the weights: its arithmetic, and that training validates and returns it."""

from __future__ import annotations

import pytest
import torch

from core_helpers import disks_image
from napari_unet.core import new_model, run_job
from napari_unet.core.training.annotations import targets_from_instances
from napari_unet.core.training.loop import (
    TrainingSample,
    TrainingSettings,
    TrainingSettingsError,
    score,
    train_job,
)
from napari_unet.core.training.weight_average import WeightAverage, average_decay


def _sample(seed: int) -> TrainingSample:
    image, labels = disks_image(seed, size=64)
    return TrainingSample(image, targets_from_instances(labels), instances=labels, name=f"disks{seed}")


FAST = dict(patch_size=32, batch_size=2, augment=False, device="cpu", learning_rate=3e-3, anchor_weight=0.0)


def test_the_decay_warms_up_and_stops_at_its_largest_value():
    decays = [average_decay(t, decay=0.998) for t in range(1, 5000)]
    assert decays[0] == pytest.approx(2 / 11)
    assert all(a <= b for a, b in zip(decays, decays[1:]))
    assert max(decays) == 0.998
    assert average_decay(100, decay=0.5) == 0.5


def test_an_update_moves_the_floats_part_of_the_way_and_copies_the_counters():
    model = new_model(depth=2, base_features=4, norm="batch")
    average = WeightAverage(model, decay=0.9)
    start = {k: v.clone() for k, v in average.model.network.state_dict().items()}
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(1.0)
    for m in model.network.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.num_batches_tracked.fill_(7)
    average.update()
    weight = 1 - average_decay(1, decay=0.9)
    averaged, current = average.model.network.state_dict(), model.network.state_dict()
    for key, value in averaged.items():
        if value.is_floating_point():
            assert torch.allclose(value, start[key] + weight * (current[key] - start[key]), atol=1e-6), key
        else:
            assert torch.equal(value, current[key]), key
    assert any("num_batches_tracked" in k and int(v) == 7 for k, v in averaged.items())


def test_a_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(new_model(depth=2, base_features=4), decay=1.0)
    with pytest.raises(TrainingSettingsError, match="weight_average"):
        TrainingSettings(weight_average=1.0)
    with pytest.raises(TrainingSettingsError, match="weight_average"):
        TrainingSettings(weight_average=-0.1)


def _run(weight_average: float, **keywords):
    torch.manual_seed(0)
    model = new_model(depth=2, base_features=4, norm="batch")
    seen = []

    def preview(live, step):
        seen.append((live, {k: v.clone() for k, v in live.network.state_dict().items()}))

    settings = TrainingSettings(steps=12, seed=0, weight_average=weight_average, **FAST)
    result = run_job(train_job(model, [_sample(0)], settings=settings, preview=preview, **keywords))
    return result, seen


def test_training_returns_the_averaged_weights_and_previews_them():
    plain, plain_seen = _run(0.0)
    averaged, seen = _run(0.9)
    # the same steps were taken (same seed), so the losses agree; the weights returned do not
    assert [e["loss"] for e in plain.log] == pytest.approx([e["loss"] for e in averaged.log])
    last = seen[-1][1]
    for key, value in averaged.model.network.state_dict().items():
        assert torch.equal(value, last[key]), key  # the preview showed what is returned
    differs = [
        not torch.allclose(v, plain.model.network.state_dict()[k])
        for k, v in averaged.model.network.state_dict().items()
        if v.is_floating_point()
    ]
    assert any(differs)
    # the averaged weights lag the trained ones: closer to the start than the plain run's
    start = plain_seen[0][1]
    moved_plain = sum(
        float((plain.model.network.state_dict()[k] - start[k]).abs().sum()) for k in start if "weight" in k
    )
    moved_avg = sum(
        float((averaged.model.network.state_dict()[k] - start[k]).abs().sum()) for k in start if "weight" in k
    )
    assert moved_avg < moved_plain
    assert averaged.model.description.training_history[-1]["settings"]["weight_average"] == 0.9


def test_validation_scores_the_averaged_weights():
    reports = []
    torch.manual_seed(0)
    model = new_model(depth=2, base_features=4, norm="batch")
    settings = TrainingSettings(steps=10, seed=0, weight_average=0.9, validate_every=5, **FAST)
    result = run_job(
        train_job(model, [_sample(0)], settings=settings, validation=[_sample(5)]), on_progress=reports.append
    )
    kept = result.model
    # the metric logged for the weights kept is the returned model's own score on the held-back sample
    kept_metric = result.best_metric
    assert kept_metric is not None
    rescored = score(kept, [_sample(5)], device=torch.device("cpu")).value
    assert rescored == pytest.approx(kept_metric, abs=1e-9)
    assert any("metric" in r.data for r in reports)
