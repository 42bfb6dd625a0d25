"""Object size: resampling images to the model's object diameter, estimating it, and bad settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from core_helpers import dots_image, drain, threshold_model
from napari_unet.core import segment, segment_job
from napari_unet.core.inference import plane_outputs
from napari_unet.core.inference.object_scale import TOLERANCE, DiameterError, check_diameter
from napari_unet.core.inference.options import InferenceOptions
from napari_unet.core.inference.resample import resample_image, resample_labels, resample_probabilities, scaled_shape
from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.object_size import median_diameter
from napari_unet.core.progress import Stage


def _sized_model(diameter: float | None, *, min_size: int = 0):
    """The threshold model (objects = bright pixels) recording an object size and a minimum size."""
    model = threshold_model()
    model.description.object_diameter_px = diameter
    model.description.instance_rule = InstanceRule("components", [1], min_size=min_size)
    return model


@pytest.mark.parametrize("value", [0, -3, float("nan"), float("inf"), "big", True, None, [12]])
def test_a_diameter_that_is_not_a_positive_number_or_a_setting_is_refused_with_what_is_accepted(value):
    with pytest.raises(DiameterError, match="positive number of pixels, or auto, model or calibration"):
        check_diameter(value)
    with pytest.raises(DiameterError):
        InferenceOptions(diameter=value)


def test_settings_are_read_from_words_and_numbers_as_a_command_line_gives_them():
    assert [check_diameter(v) for v in ("AUTO", " model ", "calibration", "17.5", 9, np.float32(3))] == [
        "auto",
        "model",
        "calibration",
        17.5,
        9.0,
        3.0,
    ]


def test_a_diameter_larger_than_the_image_is_refused():
    model = _sized_model(10.0)
    with pytest.raises(DiameterError, match="larger than the image"):
        segment(np.zeros((40, 30), np.float32), model, diameter=41, device="cpu")


def test_a_model_that_records_no_size_is_used_as_it_is_on_auto_and_refuses_a_number():
    model = _sized_model(None)
    image = dots_image(4, 4, size=3, gap=3)
    result = segment(image, model, device="cpu")
    assert result.object_scale.factor == 1.0 and result.object_scale.source == "unknown"
    assert "does not record its object size" in result.object_scale.note
    with pytest.raises(DiameterError, match="does not record the object size"):
        segment(image, model, diameter=5, device="cpu")


def test_pixel_rules_follow_the_scale_small_objects_survive_the_minimum_size_at_the_model_scale():
    # 3 x 3 objects (9 px) are below the model's minimum of 20 px; at the model's size (10 px across) they are not
    model = _sized_model(10.0, min_size=20)
    image = dots_image(5, 6, size=3, gap=5)
    as_is = segment(image, model, diameter="model", device="cpu")
    assert as_is.n_objects == 0
    resampled = segment(image, model, diameter=3.4, device="cpu")
    assert resampled.object_scale.factor == pytest.approx(10 / 3.4)
    assert resampled.n_objects == 30
    # mapped back by nearest neighbour: consecutive IDs, each object where a dot is
    ids = np.unique(resampled.labels)
    assert list(ids) == list(range(31))
    assert np.all(resampled.labels[image > 0.5] > 0)
    dots, _ = ndi.label(image > 0.5)
    assert median_diameter(resampled.labels) == pytest.approx(median_diameter(dots), rel=0.35)


def test_auto_estimates_the_size_of_large_objects_and_shrinks_the_image():
    model = _sized_model(8.0)
    image = dots_image(4, 4, size=24, gap=12)  # objects about 27 px across
    reports, result = drain(segment_job(image, model, device="cpu"))
    scale = result.object_scale
    assert scale.source == "auto"
    assert scale.diameter == pytest.approx(24 * 2 / math.sqrt(math.pi), rel=0.1)
    # the last pass was at a scale within the tolerance of what its own objects ask for
    assert 1 / TOLERANCE <= scale.factor * scale.diameter / 8.0 <= TOLERANCE
    assert scale.factor < 0.4
    assert result.n_objects == 16
    assert any(r.stage == Stage.OBJECT_SIZE for r in reports)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_auto_at_the_models_own_size_predicts_once_more_only_coarsely_and_equals_the_fixed_scale(monkeypatch):
    model = _sized_model(11.0)
    image = dots_image(6, 6, size=10, gap=6)  # about 11 px across: within the tolerance
    calls = []
    original = plane_outputs.predict_plane_job

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(plane_outputs, "predict_plane_job", counting)
    auto = segment(image, model, device="cpu")
    # the estimating pass is the result; besides it only a coarse look at a third of the size
    assert [shape[:2] for shape in calls] == [image.shape, tuple(round(n / 3) for n in image.shape)]
    fixed = segment(image, model, diameter="model", device="cpu")
    assert auto.object_scale.factor == 1.0
    assert np.array_equal(auto.labels, fixed.labels)


def test_an_image_without_objects_falls_back_to_the_models_size_and_says_so():
    model = _sized_model(10.0)
    reports, result = drain(segment_job(np.zeros((64, 64), np.float32), model, device="cpu"))
    assert result.object_scale.source == "fallback" and result.object_scale.factor == 1.0
    notices = [r.message for r in reports if r.stage == Stage.NOTICE]
    assert any("no objects were found to estimate their size" in m for m in notices)
    assert result.n_objects == 0


def test_probabilities_are_mapped_back_linearly_and_still_sum_to_one():
    model = _sized_model(10.0)
    image = dots_image(3, 3, size=4, gap=4)
    result = segment(image, model, output_kind="probabilities", diameter=2.0, device="cpu")
    assert result.probabilities.shape == (2, *image.shape)
    assert np.allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert result.object_scale.factor == pytest.approx(5.0)


def test_a_stack_is_resampled_at_one_scale_estimated_on_its_middle_plane():
    model = _sized_model(8.0)
    plane = dots_image(3, 3, size=24, gap=12)
    stack = np.stack([plane, np.zeros_like(plane), plane])
    stack[1] = plane  # the middle plane holds the objects too
    result = segment(stack, model, device="cpu")
    assert result.object_scale.factor < 0.5
    assert result.n_objects == 27
    assert len(np.unique(result.labels)) == 28  # IDs unique over the stack


def test_resampled_labels_keep_their_ids_and_probabilities_keep_their_shape():
    labels = np.zeros((30, 20), np.uint16)
    labels[3:9, 2:8], labels[15:28, 10:19] = 7, 300
    back = resample_labels(resample_labels(labels, scaled_shape(labels.shape, 2.5)), labels.shape)
    assert set(np.unique(back)) == {0, 7, 300} and back.dtype == np.uint16
    assert np.array_equal(back, labels)  # up and down by nearest neighbour is exact for whole factors
    p = np.random.default_rng(0).dirichlet([1, 1, 1], size=(12, 9)).transpose(2, 0, 1).astype(np.float32)
    q = resample_probabilities(p, (5, 4))
    assert q.shape == (3, 5, 4) and np.allclose(q.sum(axis=0), 1, atol=1e-5)


def test_an_enlarged_image_keeps_the_contrast_of_a_small_object_and_a_shrunk_one_its_mean():
    image = np.zeros((9, 9, 1), np.float32)
    image[4, 4] = 1.0  # one bright pixel: a nucleus of a 0.5x image, say
    big = resample_image(image, (18, 18))
    # bilinear would give 0.75 ** 2 = 0.5625 at the four new pixels on it; bicubic keeps 0.77 of the peak
    assert big.max() > 0.7
    assert big.sum() / 4 == pytest.approx(1.0, abs=0.05)  # the object's total brightness is kept
    rng = np.random.default_rng(1)
    noisy = rng.random((40, 40, 2)).astype(np.float32)
    small = resample_image(noisy, (10, 10))
    assert small.shape == (10, 10, 2) and np.allclose(small.mean(axis=(0, 1)), noisy.mean(axis=(0, 1)), atol=0.02)
    assert small.std() < noisy.std() / 2  # anti-aliased: each new pixel averages its 4 x 4 old ones


def _few_large_among_many_small() -> np.ndarray:
    """Six 7 x 7 squares above thirty 3 x 3 dots: at the image's scale only the squares pass a 30 px minimum."""
    large = dots_image(1, 6, size=7, gap=6)
    small = dots_image(5, 6, size=3, gap=5)
    image = np.zeros((large.shape[0] + small.shape[0], max(large.shape[1], small.shape[1])), np.float32)
    image[: large.shape[0], : large.shape[1]] = large
    image[large.shape[0] :, : small.shape[1]] = small
    return image


def test_an_estimate_too_large_because_small_objects_fell_below_the_minimum_is_enlarged_again():
    # the first pass sees only the six squares (about 8 px): enlarged for them, the dots appear but are
    # still far below the model's size, which once meant "fragments" and the image as it is (6 objects);
    # the pass found more objects, so the estimate was too large: one more pass at the dots' size
    model = _sized_model(20.0, min_size=30)
    image = _few_large_among_many_small()
    as_is = segment(image, model, diameter="model", device="cpu")
    assert as_is.n_objects == 6
    result = segment(image, model, device="cpu")
    scale = result.object_scale
    assert scale.source == "auto"
    assert result.n_objects == 36
    assert scale.diameter == pytest.approx(3 * 2 / math.sqrt(math.pi), rel=0.25)
    assert scale.factor * scale.diameter == pytest.approx(20.0, rel=0.35)


def _small_dots_of_two_sizes() -> np.ndarray:
    """Four by four 5 x 5 and 4 x 4 squares in turn: at the image's scale only the larger pass a 20 px minimum."""
    image = np.zeros((60, 60), np.float32)
    for r in range(4):
        for c in range(4):
            size = 5 if (r + c) % 2 == 0 else 4
            y, x = 8 + 12 * r, 8 + 12 * c
            image[y : y + size, x : x + size] = 1.0
    return image


def test_small_objects_that_an_enlarged_pass_finds_more_of_are_kept_without_a_coarse_look(monkeypatch):
    # clusters of small nuclei looked like cells to the coarse look and were shrunk away (brightfield DSB 2018
    # images at 0.5x): when the enlarged pass finds more whole objects of about the model's size, it is the result
    model = _sized_model(10.0, min_size=20)
    image = _small_dots_of_two_sizes()
    calls = []
    original = plane_outputs.predict_plane_job

    def counting(*args, **kwargs):
        calls.append(args[0].shape[:2])
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(plane_outputs, "predict_plane_job", counting)
    assert segment(image, model, diameter="model", device="cpu").n_objects == 8
    calls.clear()
    result = segment(image, model, device="cpu")
    assert result.n_objects == 16
    assert result.object_scale.source == "auto" and result.object_scale.factor > TOLERANCE
    assert len(calls) == 2 and calls[0] == image.shape and calls[1][0] > image.shape[0]  # no coarse look
