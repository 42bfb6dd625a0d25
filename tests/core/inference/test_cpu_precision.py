"""Mixed precision on the CPU: bfloat16 where the processor has the units, float32 when asked or elsewhere.

The rest of the suite runs in float32 (tests/conftest.py sets ``NAPARI_UNET_CPU_AMP=off``);
these tests switch it back to what users get.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core import load_named_model, segment
from napari_unet.core.inference import device as device_module
from napari_unet.core.inference.device import CPU_AMP_VARIABLE, autocast, compute_dtype, cpu_has_fast_bfloat16
from napari_unet.core.inference.engine import EngineCache, openvino_available
from napari_unet.core.inference.options import InferenceOptions

CPU = torch.device("cpu")
needs_bfloat16 = pytest.mark.skipif(
    not cpu_has_fast_bfloat16(), reason="this processor has no bfloat16 units (AMX or AVX512-BF16)"
)


@pytest.fixture
def users_default(monkeypatch):
    monkeypatch.setenv(CPU_AMP_VARIABLE, "auto")


def test_float32_when_amp_is_off_or_the_variable_says_so(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_fast_bfloat16", lambda: True)
    monkeypatch.setenv(CPU_AMP_VARIABLE, "auto")
    assert compute_dtype(CPU, amp=True) == torch.bfloat16
    assert compute_dtype(CPU, amp=False) == torch.float32
    for off in ("off", "0", " OFF "):
        monkeypatch.setenv(CPU_AMP_VARIABLE, off)
        assert compute_dtype(CPU, amp=True) == torch.float32
    monkeypatch.setenv(CPU_AMP_VARIABLE, "fast")
    with pytest.raises(ValueError, match="NAPARI_UNET_CPU_AMP must be"):
        compute_dtype(CPU, amp=True)


def test_processors_without_bfloat16_units_stay_in_float32(monkeypatch, users_default, tiny_model):
    monkeypatch.setattr(device_module, "cpu_has_fast_bfloat16", lambda: False)
    assert compute_dtype(CPU, amp=True) == torch.float32
    assert segment(np.ones((32, 32), np.float32), tiny_model, device="cpu").precision == "float32"
    with autocast(CPU, enabled=True):
        assert torch.ones(2, 2) @ torch.ones(2, 2) is not None
        assert (torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2))).dtype == torch.float32


@needs_bfloat16
def test_segment_runs_in_bfloat16_by_default_and_float32_with_amp_off(users_default):
    model = load_named_model("nuclei")
    from napari_unet._sample_data import nuclei_sample

    image = np.asarray(nuclei_sample()[0][0])
    fast = segment(image, model, device="cpu", engine="torch", keep_probabilities=True)
    exact = segment(image, model, device="cpu", engine="torch", amp=False, keep_probabilities=True)
    assert (fast.precision, exact.precision) == ("bfloat16", "float32")  # what the widget's status line says
    change = np.abs(fast.probabilities - exact.probabilities)
    assert 0 < change.max() < 0.2  # bfloat16 really ran, and stayed close
    assert change.mean() < 1e-3
    assert abs(fast.n_objects - exact.n_objects) <= max(2, exact.n_objects // 50)
    assert np.mean((fast.labels > 0) == (exact.labels > 0)) > 0.995


@needs_bfloat16
@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is installed by default on x86-64 Linux")
def test_openvino_is_compiled_once_per_precision_and_bfloat16_agrees_with_pytorchs(users_default):
    model = load_named_model("nuclei")
    image = np.random.default_rng(0).normal(100, 20, (256, 256)).astype(np.float32)
    cache = EngineCache()

    def probabilities(engine, amp):
        options = InferenceOptions(device="cpu", engine=engine, amp=amp, engine_cache=cache, diameter="model")
        return segment(image, model, output_kind="probabilities", options=options).probabilities

    ov16, ov32 = probabilities("openvino", True), probabilities("openvino", False)
    net = model.network
    assert cache.is_converted(net, torch.bfloat16) and cache.is_converted(net, torch.float32)
    torch32, torch16 = probabilities("torch", False), probabilities("torch", True)
    np.testing.assert_allclose(ov32, torch32, atol=1e-4)
    assert np.abs(ov16 - ov32).max() > 1e-4  # compiled for bfloat16, not float32 again
    # both bfloat16 engines are as far from float32 as each other, to within bfloat16 rounding
    assert np.abs(ov16 - torch32).max() < 0.2 and np.abs(torch16 - torch32).max() < 0.2


@needs_bfloat16
def test_fine_tuning_steps_stay_in_float32_on_the_cpu(users_default, tiny_model, monkeypatch):
    from napari_unet.core.training import steps

    dtypes = []
    real = steps.autocast

    def spy(device, *, enabled=True):
        dtypes.append(compute_dtype(device, amp=enabled))
        return real(device, enabled=enabled)

    monkeypatch.setattr(steps, "autocast", spy)
    from napari_unet.core.progress import run_job
    from napari_unet.core.training.finetune import samples_from_arrays
    from napari_unet.core.training.loop import TrainingSettings, train_job

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint16)
    labels[10:30, 10:30] = 1
    samples = samples_from_arrays(image, labels, tiny_model)
    settings = TrainingSettings(steps=2, batch_size=1, patch_size=32, augment=False, device="cpu")
    run_job(train_job(tiny_model, samples, settings=settings))
    assert dtypes and set(dtypes) == {torch.float32}
