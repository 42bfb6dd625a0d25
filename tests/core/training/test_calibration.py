"""The outline threshold is fitted to the annotation, on the training data only, and kept only where it helps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core_helpers import disks_image, drain
from napari_unet.core import load_model, new_model, run_job, save_model
from napari_unet.core.network.instances import InstanceRule, instances_from_probabilities
from napari_unet.core.progress import Stage
from napari_unet.core.training.annotations import targets_from_instances
from napari_unet.core.training.calibration import (
    MIN_OBJECTS,
    SeedCalibration,
    calibrate_foreground_threshold,
    calibrate_seed_threshold,
    calibration_job,
    object_counts,
    seg_sum,
    whole_annotated_objects,
)
from napari_unet.core.training.loop import TrainingSample, TrainingSettings, train_job
from scoring import seg_measure

RULE = InstanceRule("seeded_watershed", foreground_classes=[1, 2], seed_classes=[1])


def _bloated_disks(n_rows: int = 3, n_cols: int = 4, *, radius: int = 5, pitch: int = 28):
    """Disks of ``radius`` and probabilities whose foreground fades from r = 3 to r = 11.

    The most probable class is foreground out to r = 7, as a network trained
    with class-balanced weights paints objects too large; a threshold of 0.75
    on the foreground probability gives the annotated outline back.
    """
    shape = (n_rows * pitch, n_cols * pitch)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    distance = np.full(shape, np.inf)
    for k in range(n_rows * n_cols):
        cy, cx = pitch // 2 + pitch * (k // n_cols), pitch // 2 + pitch * (k % n_cols)
        r = np.hypot(yy - cy, xx - cx)
        truth[r < radius] = k + 1
        distance = np.minimum(distance, r)
    foreground = np.clip(1 - (distance - 3) / 8, 0, 1)
    interior = np.where(distance < 3, 0.95, 0.0)
    probabilities = np.stack([1 - foreground, interior, foreground - interior]).astype(np.float32)
    return probabilities, truth


def test_a_threshold_brings_back_outlines_that_the_most_probable_class_draws_too_large():
    probabilities, truth = _bloated_disks()
    before = seg_measure(truth, instances_from_probabilities(probabilities, RULE)).score
    calibration = calibrate_foreground_threshold([probabilities], [truth], RULE)
    after = seg_measure(truth, instances_from_probabilities(probabilities, RULE.with_foreground_threshold(0.75))).score
    assert before < 0.6
    assert calibration.threshold == pytest.approx(0.75)
    assert calibration.score == pytest.approx(after) and after > 0.95
    assert calibration.before == pytest.approx(before)
    assert calibration.objects == 12
    assert "SEG" in calibration.summary()


def test_fitting_outlines_keep_the_most_probable_class():
    probabilities, truth = _bloated_disks()
    truth = instances_from_probabilities(probabilities, RULE)  # the annotation is what argmax draws
    assert calibrate_foreground_threshold([probabilities], [truth], RULE).threshold is None


def test_too_few_annotated_objects_keep_the_rule_as_it_is():
    probabilities, truth = _bloated_disks(1, MIN_OBJECTS - 1)
    calibration = calibrate_foreground_threshold([probabilities], [truth], RULE)
    assert calibration.threshold is None
    assert calibration.objects == MIN_OBJECTS - 1
    assert "not fitted" in calibration.summary() and "nan" not in calibration.summary()
    own = RULE.with_foreground_threshold(0.6)
    assert calibrate_foreground_threshold([probabilities], [truth], own).threshold == 0.6


def _cells_with_weak_processes(n_cells: int = 12, *, pitch: int = 32):
    """Elongated cells whose interior is sure in a core and weak (but the most probable class) in a process.

    Under the most probable class the weak part is a seed of its own, so each
    cell comes out as two objects, one of them false: the cells
    Fine-tune learnt from three Fluo-C2DL-MSC frames fall apart this way.
    """
    shape = (pitch * 2, pitch * (n_cells // 2))
    probabilities = np.zeros((3, *shape), np.float32)
    probabilities[0] = 1
    truth = np.zeros(shape, np.int32)
    for k in range(n_cells):
        y, x = 8 + pitch * (k % 2), 4 + pitch * (k // 2)
        truth[y : y + 8, x : x + 24] = k + 1
        probabilities[:, y : y + 8, x : x + 24] = np.array([0.0, 0.3, 0.7])[:, None, None]
        probabilities[:, y + 2 : y + 6, x + 2 : x + 8] = np.array([0.0, 0.95, 0.05])[:, None, None]
        probabilities[:, y + 2 : y + 6, x + 14 : x + 22] = np.array([0.0, 0.65, 0.35])[:, None, None]
    return probabilities, truth


def test_a_seed_threshold_joins_the_pieces_that_weak_interior_cuts_a_cell_into():
    probabilities, truth = _cells_with_weak_processes()
    pieces = instances_from_probabilities(probabilities, RULE)
    assert pieces.max() == 24 and object_counts(truth, pieces) == (12, 12, 0)
    seeds = calibrate_seed_threshold([probabilities], [truth], RULE)
    assert seeds.threshold is not None and 0.65 <= seeds.threshold < 0.95
    assert seeds.before == pytest.approx(2 / 3) and seeds.f1 == 1.0
    joined = instances_from_probabilities(probabilities, replace(RULE, seed_threshold=seeds.threshold))
    assert object_counts(truth, joined) == (12, 0, 0)
    assert "F1@0.5 0.667 -> 1.000" in seeds.summary()


def test_seeds_that_already_separate_the_objects_are_kept():
    probabilities, truth = _cells_with_weak_processes()
    probabilities[1] = np.where(probabilities[1] == np.float32(0.65), 0.3, probabilities[1])
    probabilities[2] = np.where(probabilities[2] == np.float32(0.35), 0.7, probabilities[2])
    seeds = calibrate_seed_threshold([probabilities], [truth], RULE)
    assert seeds.threshold is None and seeds.f1 == seeds.before == 1.0


def test_objects_on_pixels_not_judged_are_neither_false_nor_matched():
    probabilities, truth = _cells_with_weak_processes(4)
    unannotated = np.zeros(truth.shape, bool)
    unannotated[:, truth.shape[1] // 2 :] = True  # the two right cells were not annotated
    truth = np.where(unannotated, 0, truth)
    joined = instances_from_probabilities(probabilities, replace(RULE, seed_threshold=0.8))
    assert object_counts(truth, joined) == (2, 2, 0)
    assert object_counts(truth, joined, ignore=unannotated) == (2, 0, 0)


def test_the_calibration_fits_seeds_after_outlines_and_the_record_says_so():
    probabilities, truth = _cells_with_weak_processes()
    outlines = calibrate_foreground_threshold([probabilities], [truth], RULE)
    seeds = calibrate_seed_threshold([probabilities], [truth], outlines.fitted(RULE))
    calibration = replace(outlines, seeds=seeds)
    fitted = calibration.fitted(RULE)
    assert fitted.seed_threshold == seeds.threshold and fitted.foreground_threshold == outlines.threshold
    record = calibration.to_dict()
    assert record["seed_threshold"] == seeds.threshold and record["seed_f1_after"] == 1.0
    assert "seeds: interior above" in calibration.summary()
    kept = calibration.unchanged(RULE)
    assert kept.fitted(RULE) == RULE and "seed_threshold" not in kept.to_dict()


def test_seg_sum_agrees_with_the_benchmarks_seg_measure():
    rng = np.random.default_rng(3)
    for _ in range(5):
        truth = rng.integers(0, 6, (40, 50)) * (rng.random((40, 50)) < 0.7)
        predicted = np.where(rng.random((40, 50)) < 0.8, truth, rng.integers(0, 8, (40, 50)))
        predicted[:10] = 9  # one large object
        ours = seg_sum(truth, predicted)
        theirs = seg_measure(truth, predicted)
        assert ours.objects == theirs.count
        assert ours.score == pytest.approx(theirs.score)


def test_objects_cut_by_the_unannotated_area_are_left_out():
    labels = np.array([[1, 1, 0, 2, 2, 0, 3]])
    annotated = np.array([[True, True, True, True, False, True, True]])
    assert whole_annotated_objects(labels, annotated).tolist() == [[1, 1, 0, 0, 0, 0, 3]]


def test_the_calibration_job_reports_each_image_and_can_be_stopped():
    model = new_model(depth=2, base_features=4, padding="same")
    images = [np.random.default_rng(i).random((32, 32, 1)).astype(np.float32) for i in range(3)]
    truths = [np.zeros((32, 32), np.int32) for _ in images]
    reports, calibration = drain(calibration_job(model, images, truths, device="cpu"))
    assert [r.stage for r in reports] == [Stage.CALIBRATE] * 4
    assert calibration is not None and calibration.objects == 0
    _, stopped = drain(calibration_job(model, images, truths, device="cpu", should_stop=lambda: True))
    assert stopped is None


def _disks(seed: int, size: int = 64) -> TrainingSample:
    image, labels = disks_image(seed, size=size, n_disks=6)
    return TrainingSample(image, targets_from_instances(labels), instances=labels, name=f"disks{seed}")


FAST = dict(patch_size=32, batch_size=4, augment=False, device="cpu", validate_every=10, learning_rate=3e-3)


def test_training_fits_the_outlines_records_it_and_the_file_keeps_it(tmp_path):
    model = new_model(depth=2, base_features=8, norm="batch")
    reports, result = drain(train_job(model, [_disks(0), _disks(1)], settings=TrainingSettings(steps=20, **FAST)))
    record = result.model.description.training_history[-1]["outline_calibration"]
    assert record["objects"] >= MIN_OBJECTS
    assert result.model.description.instance_rule.foreground_threshold == record["threshold"]
    assert result.model.description.instance_rule.seed_threshold == record["seed_threshold"]
    assert any(r.stage == Stage.CALIBRATE for r in reports)
    assert model.description.instance_rule.foreground_threshold is None  # the start model is untouched
    loaded = load_model(save_model(result.model, tmp_path / "m.unet.safetensors"))
    assert loaded.description.instance_rule == result.model.description.instance_rule


def test_training_without_calibration_or_after_stop_keeps_the_rule():
    model = new_model(depth=2, base_features=8, norm="batch")
    settings = TrainingSettings(steps=5, calibrate_outlines=False, **FAST)
    reports, result = drain(train_job(model, [_disks(0)], settings=settings))
    assert "outline_calibration" not in result.model.description.training_history[-1]
    assert not any(r.stage == Stage.CALIBRATE for r in reports)
    reports, stopped = drain(
        train_job(model, [_disks(0)], settings=TrainingSettings(steps=5, **FAST), stop=lambda: True)
    )
    assert "outline_calibration" not in stopped.model.description.training_history[-1]
    assert not any(r.stage == Stage.CALIBRATE for r in reports)


def _held_back_worse_when(monkeypatch, changed):
    """Make the held-back score 0.5 lower for models whose instance rule ``changed`` says was calibrated."""
    from napari_unet.core.training import loop

    real_score = loop.score

    def worse(model, samples, *, device):
        result = real_score(model, samples, device=device)
        if changed(model.description.instance_rule):
            return loop.Score(result.value - 0.5, result.objects)
        return result

    monkeypatch.setattr(loop, "score", worse)
    return loop


def test_a_threshold_that_lowers_the_held_back_score_is_not_kept(monkeypatch):
    loop = _held_back_worse_when(monkeypatch, lambda rule: rule.foreground_threshold is not None)
    monkeypatch.setattr(
        loop,
        "samples_calibration_job",
        lambda *a, **k: _returns(calibrate_foreground_threshold(*_bloated_disks_lists(), RULE)),
    )
    model = new_model(depth=2, base_features=8, norm="batch")
    settings = TrainingSettings(steps=10, **FAST)
    result = run_job(train_job(model, [_disks(0)], settings=settings, validation=[_disks(5)]))
    assert result.model.description.instance_rule.foreground_threshold is None
    assert result.model.description.training_history[-1]["outline_calibration"]["threshold"] is None


def test_a_seed_threshold_that_lowers_the_held_back_score_is_not_kept(monkeypatch):
    loop = _held_back_worse_when(monkeypatch, lambda rule: rule.seed_threshold is not None)
    outlines = calibrate_foreground_threshold(*_bloated_disks_lists(), RULE)
    with_seeds = replace(outlines, threshold=None, seeds=SeedCalibration(0.7, 1.0, 0.5))
    monkeypatch.setattr(loop, "samples_calibration_job", lambda *a, **k: _returns(with_seeds))
    model = new_model(depth=2, base_features=8, norm="batch")
    settings = TrainingSettings(steps=10, **FAST)
    result = run_job(train_job(model, [_disks(0)], settings=settings, validation=[_disks(5)]))
    assert result.model.description.instance_rule.seed_threshold is None
    assert "seed_threshold" not in result.model.description.training_history[-1]["outline_calibration"]


def _bloated_disks_lists():
    probabilities, truth = _bloated_disks()
    return [probabilities], [truth]


def _returns(value):
    yield from ()
    return value


def test_a_fitted_copy_leaves_the_model_alone():
    from napari_unet.core.training.calibration import fitted_copy_job

    model = new_model(depth=2, base_features=8, norm="batch")
    trained = run_job(train_job(model, [_disks(0), _disks(1)], settings=TrainingSettings(steps=20, **FAST)))
    live = trained.model
    live.description.instance_rule = live.description.instance_rule.with_foreground_threshold(None)
    copy = run_job(fitted_copy_job(live, [_disks(0), _disks(1)], device="cpu"))
    assert copy is not live and live.description.instance_rule.foreground_threshold is None
    expected = trained.model.description.training_history[-1]["outline_calibration"]["threshold"]
    assert copy.description.instance_rule.foreground_threshold == expected


@pytest.mark.parametrize(("own", "new", "kept"), [(0.90, 0.60, False), (0.80, 0.79, True), (0.70, 0.85, True)])
def test_the_held_back_objects_seg_decides_whether_the_threshold_is_kept(monkeypatch, own, new, kept):
    from napari_unet.core.training import loop
    from napari_unet.core.training.calibration import SegSum

    monkeypatch.setattr(loop, "held_back_seg", lambda *a, **k: [SegSum(own * 10, 10), SegSum(new * 10, 10)])
    monkeypatch.setattr(
        loop,
        "samples_calibration_job",
        lambda *a, **k: _returns(calibrate_foreground_threshold(*_bloated_disks_lists(), RULE)),
    )
    model = new_model(depth=2, base_features=8, norm="batch")
    result = run_job(train_job(model, [_disks(0)], settings=TrainingSettings(steps=10, **FAST), validation=[_disks(5)]))
    threshold = result.model.description.instance_rule.foreground_threshold
    assert (threshold == pytest.approx(0.75)) if kept else (threshold is None)
