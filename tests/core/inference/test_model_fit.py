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
