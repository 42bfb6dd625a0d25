"""The one fine-tuning path: mistake weights, a truthful history, previews from a hook, the recipe."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_unet.core import new_model, run_job
from napari_unet.core.training import finetune_job as fj
from napari_unet.core.training.finetune import samples_from_arrays
from napari_unet.core.training.loop import TrainingSettings, train_job
from napari_unet.core.training.recipe import default_learning_rate

FAST = dict(steps=1, patch_size=32, batch_size=2, device="cpu")


def _request(model, nuclei_crop, **options) -> fj.FineTuneRequest:
    image, truth = nuclei_crop
    settings = TrainingSettings(**FAST, mistake_weight=options.pop("mistake_weight", 3.0))
    return fj.FineTuneRequest(
        model=model,
        images=[fj.AnnotatedImage("crop", image, truth.copy())],
        settings=settings,
        validation_fraction=0.0,
        **options,
    )


def _plain_weights(model, nuclei_crop) -> np.ndarray:
    image, truth = nuclei_crop
    (sample,) = samples_from_arrays(image, truth, model, name="crop")
    return sample.target.weights


def test_fine_tuning_weighs_the_models_mistakes_and_the_history_says_so(tiny_model, nuclei_crop):
    request = _request(tiny_model, nuclei_crop)
    samples = run_job(fj.prepare_job(request))
    (sample,) = samples.train
    plain = _plain_weights(tiny_model, nuclei_crop)
    ratio = sample.target.weights[plain > 0] / plain[plain > 0]
    assert set(np.round(np.unique(ratio), 5)) == {1.0, 3.0}  # the model's mistakes weigh 3 times more
    assert samples.mistake_weight == 3.0

    result = run_job(fj.training_job(request, samples))
    history = result.model.description.training_history[-1]
    assert history["mistake_weight_applied"] is True
    assert history["settings"]["mistake_weight"] == 3.0


def test_from_scratch_applies_no_mistake_weight_and_the_history_says_so(tiny_model, nuclei_crop):
    request = _request(tiny_model, nuclei_crop, from_scratch=True)
    samples = run_job(fj.prepare_job(request))
    np.testing.assert_array_equal(samples.train[0].target.weights, _plain_weights(tiny_model, nuclei_crop))
    history = run_job(fj.training_job(request, samples)).model.description.training_history[-1]
    assert history["mistake_weight_applied"] is False
    assert history["settings"]["mistake_weight"] == 1.0  # the factor really used, not the 3.0 asked for


def test_a_mistake_weight_of_one_predicts_nothing_and_says_it_was_not_applied(tiny_model, nuclei_crop, monkeypatch):
    predicted = []
    monkeypatch.setattr(fj, "_predict", lambda *a, **k: predicted.append(1))
    request = _request(tiny_model, nuclei_crop, mistake_weight=1.0)
    samples = run_job(fj.prepare_job(request))
    assert not predicted and samples.mistake_weight == 1.0
    history = run_job(fj.training_job(request, samples)).model.description.training_history[-1]
    assert history["mistake_weight_applied"] is False


def test_separate_validation_images_are_used_instead_of_holding_annotation_back(tiny_model, nuclei_crop):
    image, truth = nuclei_crop
    request = _request(tiny_model, nuclei_crop, validation=[fj.AnnotatedImage("held", image, truth.copy())])
    samples = run_job(fj.prepare_job(request))
    assert [s.name for s in samples.train] == ["crop"]
    assert [s.name for s in samples.validation] == ["held"]


def test_the_preview_hook_sees_the_model_being_trained_and_its_results_are_yielded(tiny_model, nuclei_crop):
    from napari_unet.core.training.finetune import samples_from_arrays

    image, truth = nuclei_crop
    samples = samples_from_arrays(image, truth, tiny_model, name="crop")
    seen = []

    def preview(model, step):
        seen.append((model, step))
        return None if step == 2 else f"preview {step}"

    reports = list(
        _reports(train_job(tiny_model, samples, settings=TrainingSettings(**{**FAST, "steps": 3}), preview=preview))
    )
    assert [r for r in reports if isinstance(r, str)] == ["preview 1", "preview 3"]
    assert [step for _, step in seen] == [1, 2, 3]
    assert all(model is not tiny_model for model, _ in seen) and len({id(m) for m, _ in seen}) == 1
    assert all("model" not in r.data for r in reports if not isinstance(r, str))


def test_no_preview_runs_once_stop_is_set(tiny_model, nuclei_crop):
    image, truth = nuclei_crop
    samples = samples_from_arrays(image, truth, tiny_model, name="crop")
    stop = threading.Event()
    seen = []
    job = train_job(
        tiny_model,
        samples,
        settings=TrainingSettings(**{**FAST, "steps": 50}),
        stop=stop,
        preview=lambda model, step: seen.append(step) or stop.set(),
    )
    result = run_job(job)
    assert seen == [1] and result.stopped and result.steps_done == 1


def _reports(job):
    while True:
        try:
            yield next(job)
        except StopIteration:
            return


def test_the_learning_rate_rule():
    # 1e-3 with the pull toward the starting weights made corrections stick (docs/performance.md)
    assert default_learning_rate(from_scratch=False) == TrainingSettings().learning_rate == 1e-3
    assert TrainingSettings().anchor_weight > 0
    assert default_learning_rate(from_scratch=True) == 1e-3


def test_fine_tuning_leaves_the_start_model_untouched_and_a_fresh_model_learns(nuclei_crop):
    import torch

    torch.manual_seed(0)
    model = new_model(depth=2, base_features=4, padding="same")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    result = run_job(fj.finetune_job(_request(model, nuclei_crop), stop=threading.Event()))
    assert result.steps_done == 1 and result.model is not model
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="crop: "):  # a bad annotation is named
        run_job(fj.prepare_job(_request(model, (nuclei_crop[0], nuclei_crop[1][:64]))))
