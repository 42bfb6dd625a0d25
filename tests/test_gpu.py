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


def _model(padding: str):
    torch.manual_seed(0)
    return new_model(depth=3, base_features=8, padding=padding, norm="batch")


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_cuda_mixed_precision_matches_the_cpu(padding):
    model = _model(padding)
    image = np.random.default_rng(0).random((300, 257)).astype(np.float32)
    cpu = segment(image, model, output="probabilities", device="cpu").probabilities
    gpu = segment(image, model, output="probabilities", device="cuda", amp=True).probabilities
    assert gpu.shape == cpu.shape
    assert np.abs(gpu - cpu).max() < 0.05  # bf16 rounding
    fp32 = segment(image, model, output="probabilities", device="cuda", amp=False).probabilities
    assert np.abs(fp32 - cpu).max() < 1e-3


def test_cuda_out_of_memory_retries_with_smaller_tiles(monkeypatch):
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
    result = run_job(segment_job(image, model, output="probabilities", device="cuda", amp=False, tile_size=512),
                     on_progress=reports.append)
    assert any(r.stage == "notice" for r in reports)
    assert np.abs(result.probabilities - expected).max() < 1e-4
