"""A colour image given to a one-channel model is said to be so, by every Segment path."""

from __future__ import annotations

import numpy as np
import pytest

from core_helpers import dots_image, drain, threshold_model
from napari_unet.core.blockwise.to_zarr import segment_to_zarr_job
from napari_unet.core.inference.segmentation import segment_job
from napari_unet.core.progress import Stage


def _notices(reports):
    return [r.message for r in reports if r.stage == Stage.NOTICE]


def test_an_rgb_image_into_a_gray_model_gets_a_notice_and_still_a_result():
    gray = dots_image(3, 3, size=4, gap=4)
    rgb = np.stack([gray] * 3, axis=-1)
    reports, result = drain(segment_job(rgb, threshold_model(), rgb=True, device="cpu", output_kind="classes"))
    notices = _notices(reports)
    assert len(notices) == 1 and "RGB colour" in notices[0] and "fine-tune" in notices[0]
    assert result.labels.shape == gray.shape and result.labels.max() == 1
    reports, _ = drain(segment_job(gray, threshold_model(), device="cpu", output_kind="classes"))
    assert not any("RGB" in n for n in _notices(reports))


def test_the_block_by_block_path_says_it_too(tmp_path):
    pytest.importorskip("zarr")
    rgb = np.stack([dots_image(3, 3, size=4, gap=4)] * 3, axis=-1)
    job = segment_to_zarr_job(
        rgb, threshold_model(), tmp_path / "out.zarr", rgb=True, output_kind="classes", block_size=32, device="cpu"
    )
    reports, _ = drain(job)
    assert any("RGB colour" in n for n in _notices(reports))


def _bright_field(image: np.ndarray) -> np.ndarray:
    return (image.max() - image).astype(np.float32)  # dark objects on a bright background


def test_a_background_far_from_the_training_images_gets_a_notice():
    model = threshold_model()
    model.description.background_intensity = (0.0, 0.05)  # fluorescence: dark backgrounds
    dots = dots_image(6, 6, size=3, gap=6)
    reports, _ = drain(segment_job(dots, model, device="cpu", output_kind="classes"))
    assert not _notices(reports)
    reports, result = drain(segment_job(_bright_field(dots), model, device="cpu", output_kind="classes"))
    notices = _notices(reports)
    assert len(notices) == 1 and "brighter background" in notices[0] and "0.00-0.05" in notices[0]
    assert result.labels is not None  # still segmented: a notice, not a refusal
    model.description.background_intensity = None  # older files: nothing to compare with
    reports, _ = drain(segment_job(_bright_field(dots), model, device="cpu", output_kind="classes"))
    assert not _notices(reports)


def test_training_records_the_backgrounds_and_a_fine_tune_widens_them():
    from napari_unet.core import new_model, run_job
    from napari_unet.core.training.annotations import targets_from_instances
    from napari_unet.core.training.loop import TrainingSample, TrainingSettings, train_job

    dots = dots_image(6, 6, size=3, gap=6)
    labels = (dots > 0).astype(np.int32)

    def sample(image):
        return TrainingSample(image[..., None], targets_from_instances(labels), instances=labels)

    settings = TrainingSettings(steps=2, patch_size=32, device="cpu", augment=False, calibrate_outlines=False)
    dark = run_job(train_job(new_model(depth=2, base_features=4), [sample(dots)], settings=settings)).model
    low, high = dark.description.background_intensity
    assert high < 0.1
    both = run_job(train_job(dark, [sample(_bright_field(dots))], settings=settings)).model
    assert both.description.background_intensity[0] == low
    assert both.description.background_intensity[1] > 0.9


def test_the_background_range_round_trips_and_bad_ranges_are_refused(tmp_path):
    from core_helpers import tiny_model
    from napari_unet.core import load_model, save_model
    from napari_unet.core.network.model_file import ModelDescription, read_description

    model = tiny_model(padding="same")
    model.description.background_intensity = (0.1, 0.3)
    path = save_model(model, tmp_path / "m.unet.safetensors")

    assert read_description(path).background_intensity == (0.1, 0.3)
    doc = model.description.to_dict()
    for bad in ([0.5, 0.1], [0.1], [0.1, 1.5], "low"):
        with pytest.raises(Exception, match="background_intensity"):
            ModelDescription.from_dict({**doc, "background_intensity": bad})
    assert load_model(path).description.background_intensity == (0.1, 0.3)
