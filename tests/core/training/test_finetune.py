"""From painted layers to training samples: shapes, modes, validation split."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core import new_model
from napari_unet.core.training.annotations import IGNORE
from napari_unet.core.training.finetune import samples_from_arrays, split_validation


def _instances(shape=(40, 40)):
    labels = np.zeros(shape, np.uint16)
    labels[5:15, 5:15] = 1
    labels[20:30, 22:35] = 2
    return labels


def test_corrections_of_a_stack_give_one_sample_per_annotated_plane():
    model = new_model(depth=2, base_features=4)
    image = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    labels = np.zeros((3, 40, 40), np.uint16)
    labels[0] = _instances()
    labels[2] = _instances()
    samples = samples_from_arrays(image, labels, model, mode="corrections", name="stack")
    assert [s.name for s in samples] == ["stack[0]", "stack[2]"]
    assert samples[0].image.shape == (40, 40, 1)
    assert set(np.unique(samples[0].target.classes)) == {0, 1, 2}


def test_scribbles_leave_unpainted_pixels_ignored():
    model = new_model(depth=2, base_features=4)
    painted = np.zeros((40, 40), np.uint8)
    painted[0:3] = 1
    painted[10, 10] = 2
    (sample,) = samples_from_arrays(np.ones((40, 40)), painted, model, mode="scribbles")
    assert (sample.target.classes[5:9] == IGNORE).all()
    assert sample.target.classes[10, 10] == 1


def test_rgb_image_for_a_grayscale_model():
    model = new_model(depth=2, base_features=4)
    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    (sample,) = samples_from_arrays(rgb, _instances(), model, rgb=True)
    assert sample.image.shape == (40, 40, 1)


def test_reviewed_region_limits_the_ground_truth():
    model = new_model(depth=2, base_features=4)
    reviewed = np.zeros((40, 40), bool)
    reviewed[:20] = True
    (sample,) = samples_from_arrays(np.ones((40, 40)), _instances(), model, reviewed=reviewed)
    assert (sample.target.classes[20:] == IGNORE).all()
    assert sample.target.annotated[:20].all()


def test_previous_result_marks_mistakes_with_more_weight():
    model = new_model(depth=2, base_features=4)
    corrected = _instances()
    previous = corrected.copy()
    previous[20:30, 22:35] = 0  # the model missed object 2
    plain = samples_from_arrays(np.ones((40, 40)), corrected, model)[0]
    heavy = samples_from_arrays(np.ones((40, 40)), corrected, model, previous=previous, mistake_weight=5.0)[0]
    assert heavy.target.weights[25, 28] == pytest.approx(5 * plain.target.weights[25, 28])
    assert heavy.target.weights[10, 10] == pytest.approx(plain.target.weights[10, 10])


def test_mismatched_shapes_and_empty_labels_are_refused_with_advice():
    model = new_model(depth=2, base_features=4)
    with pytest.raises(ValueError, match="labels have shape"):
        samples_from_arrays(np.ones((40, 40)), np.zeros((30, 40), np.uint8), model)
    with pytest.raises(ValueError, match="nothing is annotated"):
        samples_from_arrays(np.ones((40, 40)), np.zeros((40, 40), np.uint8), model, mode="scribbles")


def test_class_values_beyond_the_model_are_refused():
    model = new_model(depth=2, base_features=4, class_names=["membrane", "cell"])
    labels = np.full((40, 40), 2, np.uint8)
    with pytest.raises(ValueError, match="not a class of this model"):
        samples_from_arrays(np.ones((40, 40)), labels, model)


def _grid(shape=(96, 96), step=16, radius=5):
    """Disks on a grid: one object every ``step`` pixels (36 in 96 x 96)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    n = 0
    for cy in range(step // 2, shape[0], step):
        for cx in range(step // 2, shape[1], step):
            n += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = n
    return labels


def test_single_image_validation_split_does_not_overlap():
    model = new_model(depth=2, base_features=4)
    samples = samples_from_arrays(np.ones((96, 96)), _grid(), model)
    train, val = split_validation(samples, fraction=0.25)
    assert len(train) == len(val) == 1
    overlap = train[0].target.annotated & val[0].target.annotated
    assert not overlap.any()
    assert (train[0].target.annotated | val[0].target.annotated).sum() == samples[0].target.annotated.sum()
    assert (val[0].region == val[0].target.annotated).all()


def test_the_held_back_region_cuts_no_object_and_too_few_objects_hold_nothing_back():
    model = new_model(depth=2, base_features=4)
    labels = _grid()
    (sample,) = samples_from_arrays(np.ones((96, 96)), labels, model)
    _train, (held,) = split_validation([sample], fraction=0.3)  # 29 rows: a band through a row of disks
    for obj in np.unique(labels[held.region]):
        if obj:
            assert held.region[labels == obj].all(), f"object {obj} is cut by the held-back region"
    (few,) = samples_from_arrays(np.ones((40, 40)), _instances(), model)  # two objects only
    train, val = split_validation([few], fraction=0.25)
    assert val == [] and (train[0].target.annotated == few.target.annotated).all()


def test_corrected_objects_are_never_held_back():
    """Issue 17, point 2: corrections in the bottom rows were held back, so never learnt."""
    model = new_model(depth=2, base_features=4)
    corrected = _grid()
    previous = corrected.copy()
    previous[np.isin(previous, [32, 33])] = 0  # the model missed two objects of the bottom row
    previous[previous == 35] = 34  # and merged two others there
    (sample,) = samples_from_arrays(np.ones((96, 96)), corrected, model, previous=previous, mistake_weight=3.0)
    train, val = split_validation([sample], fraction=0.2)
    changed = np.isin(corrected, [32, 33, 34, 35])
    assert train[0].target.annotated[changed].all(), "a corrected object was held back from training"
    assert len(val) == 1 and not val[0].target.annotated[changed].any()


def test_several_planes_hold_back_whole_planes():
    model = new_model(depth=2, base_features=4)
    labels = np.stack([_instances()] * 5)
    samples = samples_from_arrays(np.ones((5, 40, 40)), labels, model)
    train, val = split_validation(samples, fraction=0.2)
    assert len(train) == 4 and len(val) == 1
    assert {s.name for s in train}.isdisjoint({s.name for s in val})


def test_the_least_corrected_planes_are_held_back():
    model = new_model(depth=2, base_features=4)
    labels = np.stack([_grid()] * 5)
    previous = labels.copy()
    for plane in (0, 1, 3, 4):
        previous[plane][previous[plane] == 7] = 0  # a missed object in every plane but 2
    samples = samples_from_arrays(np.ones((5, 96, 96)), labels, model, previous=previous, mistake_weight=2.0)
    for seed in range(4):
        _train, (held,) = split_validation(samples, fraction=0.2, seed=seed)
        assert held.plane == (2,)
