"""Typed progress: stages are a closed set, and the fraction of a whole job only grows."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.core import Progress, Stage, run_job, segment_job, segment_to_zarr_job, within
from napari_unet.core.batch.files import segment_files_job


def test_a_stage_named_by_string_becomes_the_enum_and_unknown_ones_are_refused():
    report = Progress("tiles", done=1, total=2)
    assert report.stage is Stage.TILES and report.stage == "tiles"
    with pytest.raises(ValueError, match="instances"):
        Progress("instances")  # documented once, never yielded: no longer a stage at all


def test_within_maps_an_inner_job_into_its_share_and_returns_its_result():
    def inner():
        yield Progress(Stage.TILES, done=1, total=4)
        yield Progress(Stage.TILES, done=4, total=4)
        return "done"

    reports = []
    assert run_job(within(inner(), start=0.5, stop=0.7), on_progress=reports.append) == "done"
    assert [round(r.fraction, 6) for r in reports] == [0.55, 0.7]
    with pytest.raises(ValueError, match="within"):
        next(within(inner(), start=0.8, stop=0.2))


def test_closing_the_outer_job_closes_the_inner_one():
    closed = []

    def inner():
        try:
            while True:
                yield Progress(Stage.TILES)
        finally:
            closed.append(True)

    outer = within(inner(), start=0.0, stop=1.0)
    next(outer)
    outer.close()
    assert closed == [True]


def _fractions(job):
    reports = []
    result = run_job(job, on_progress=reports.append)
    return result, [r.fraction for r in reports if isinstance(r, Progress)]


def _assert_only_grows(fractions):
    assert fractions, "the job reported no progress"
    assert all(b >= a - 1e-12 for a, b in zip(fractions, fractions[1:])), fractions
    assert 0.0 <= fractions[0] and fractions[-1] == pytest.approx(1.0)


def test_a_stack_segments_with_a_growing_fraction(tiny_model):
    stack = np.random.default_rng(0).normal(100, 10, (3, 48, 40)).astype(np.float32)
    _, fractions = _fractions(segment_job(stack, tiny_model, tile_size=32, device="cpu"))
    _assert_only_grows(fractions)


def test_a_batch_of_files_has_a_growing_fraction(tmp_path, tiny_model):
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        tifffile.imwrite(tmp_path / f"{name}.tif", rng.normal(100, 10, (40, 56)).astype(np.float32))
    rows, fractions = _fractions(
        segment_files_job(
            sorted(tmp_path.glob("*.tif")), model=tiny_model, output_folder=tmp_path / "out", device="cpu"
        )
    )
    assert [r.status for r in rows] == ["ok"] * 3
    _assert_only_grows(fractions)


def test_a_large_image_block_by_block_has_a_growing_fraction(tmp_path, tiny_model):
    image = np.random.default_rng(2).normal(100, 10, (96, 80)).astype(np.float32)
    result, fractions = _fractions(
        segment_to_zarr_job(image, tiny_model, tmp_path / "out.zarr", block_size=32, margin=8, device="cpu")
    )
    assert result.path.exists()
    _assert_only_grows(fractions)
