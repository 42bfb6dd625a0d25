"""CUDA checks; they run on machines with an NVIDIA GPU (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core import new_model, run_job, segment, segment_job

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture
def exact_float32(monkeypatch):
    """Plain float32 convolutions: CUDA's default TF32 rounds to ~1e-3."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _model(padding: str):
    torch.manual_seed(0)
    return new_model(depth=3, base_features=8, padding=padding, norm="batch")


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_cuda_mixed_precision_matches_the_cpu(padding, exact_float32):
    model = _model(padding)
    image = np.random.default_rng(0).random((300, 257)).astype(np.float32)
    cpu = segment(image, model, output="probabilities", device="cpu").probabilities
    gpu = segment(image, model, output="probabilities", device="cuda", amp=True).probabilities
    assert gpu.shape == cpu.shape
    assert np.abs(gpu - cpu).max() < 0.05  # bf16 rounding
    fp32 = segment(image, model, output="probabilities", device="cuda", amp=False).probabilities
    assert np.abs(fp32 - cpu).max() < 1e-3


def test_cuda_out_of_memory_retries_with_smaller_tiles(monkeypatch, exact_float32):
    model = _model("valid")
    image = np.random.default_rng(1).random((400, 400)).astype(np.float32)
    expected = segment(image, model, output="probabilities", device="cuda", amp=False).probabilities
    forward = model.network.forward

    def limited(x):
        if x.shape[-1] * x.shape[-2] * x.shape[0] > 200 * 200:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(x)

    monkeypatch.setattr(model.network, "forward", limited)
    reports = []
    result = run_job(
        segment_job(image, model, output="probabilities", device="cuda", amp=False, tile_size=512),
        on_progress=reports.append,
    )
    assert any(r.stage == "notice" for r in reports)
    assert np.abs(result.probabilities - expected).max() < 1e-4


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.float64, bool])
def test_cuda_normalises_every_dtype_like_the_cpu(dtype, exact_float32):
    model = _model("same")
    rng = np.random.default_rng(2)
    if dtype is bool:
        image = rng.random((130, 170)) > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, (130, 170), endpoint=True).astype(dtype)
    else:
        image = rng.normal(0, 1e3, (130, 170)).astype(dtype)
    cpu = segment(image, model, output="probabilities", device="cpu").probabilities
    gpu = segment(image, model, output="probabilities", device="cuda", amp=False).probabilities
    assert np.abs(gpu - cpu).max() < 1e-4


def test_cuda_non_finite_pixels_do_not_spread(exact_float32):
    model = _model("same")
    image = np.random.default_rng(3).random((96, 96)).astype(np.float32)
    image[10:20, 10:20] = np.nan
    image[50, 50] = np.inf
    cpu = segment(image, model, output="probabilities", device="cpu").probabilities
    gpu = segment(image, model, output="probabilities", device="cuda", amp=False).probabilities
    assert np.isfinite(gpu).all()
    assert np.abs(gpu - cpu).max() < 1e-4


@pytest.mark.parametrize("tile", [64, 160])
def test_cuda_stitched_tiles_match_one_pass(tile, exact_float32):
    model = _model("same")
    image = np.random.default_rng(4).random((517, 389)).astype(np.float32)
    whole = segment(image, model, output="probabilities", device="cuda", amp=False, tile_size=1024).probabilities
    tiled = segment(image, model, output="probabilities", device="cuda", amp=False, tile_size=tile).probabilities
    assert np.abs(tiled - whole).max() < 1e-4
