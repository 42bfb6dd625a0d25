"""The engine that runs the network: PyTorch, or OpenVINO on the CPU.

OpenVINO is installed with the ``testing`` extra, so these tests run in CI;
the suite's other tests keep PyTorch (tests/conftest.py sets
``NAPARI_UNET_CPU_ENGINE=torch``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_unet.core import load_named_model, new_model, segment
from napari_unet.core.inference import engine as engine_module
from napari_unet.core.inference.engine import EngineCache, EngineError, choose_engine, network_runner
from napari_unet.core.inference.options import InferenceOptions
from napari_unet.core.inference.predict import predict_plane_job
from napari_unet.core.progress import run_job

CPU = torch.device("cpu")
if not engine_module.openvino_available():  # imported our way: with its telemetry off
    pytest.skip("the testing extra installs OpenVINO", allow_module_level=True)


@pytest.fixture
def auto_engine(monkeypatch):
    """``auto`` as users get it: OpenVINO when installed."""
    monkeypatch.setenv(engine_module.ENGINE_VARIABLE, "auto")


def _probabilities(image, model, engine, cache=None, channel_axis=None, **options):
    settings = InferenceOptions(device="cpu", engine=engine, engine_cache=cache, **options)
    return segment(image, model, output_kind="probabilities", channel_axis=channel_axis, options=settings).probabilities


def _pytorch(runner, net) -> bool:
    """True if ``runner`` is PyTorch running ``net`` (itself, or its copy with batch norm folded in)."""
    return runner is net or (type(runner) is type(net) and runner.config == net.config)


def test_torch_engine_runs_the_network_with_its_batch_norm_folded():
    net = new_model(depth=2, base_features=4, norm="batch").network.eval()
    with torch.no_grad():  # statistics as training leaves them, not the identity of a fresh layer
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 2)
    runner = network_runner(net, CPU, engine="torch")
    assert runner is not net and _pytorch(runner, net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the model's own network is kept
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        reference = net(x)
        # float32 rounding of a differently ordered sum, relative to the logits' size
        np.testing.assert_allclose(runner(x), reference, atol=1e-5 * float(reference.abs().max()))
    # made once per set of weights and cache; new weights get a new copy
    cache = EngineCache()
    first = network_runner(net, CPU, engine="torch", cache=cache)
    assert network_runner(net, CPU, engine="torch", cache=cache) is first
    with torch.no_grad():
        net.head.weight.mul_(2.0)
    assert network_runner(net, CPU, engine="torch", cache=cache) is not first


def test_networks_without_batch_norm_run_as_they_are(tiny_model):
    net = tiny_model.network.eval()
    assert tiny_model.config.norm != "batch"
    assert network_runner(net, CPU, engine="torch") is net


def test_unknown_engine_names_are_refused(tiny_model, monkeypatch):
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_engine(tiny_model.network, CPU, engine="tensorrt")
    monkeypatch.setenv(engine_module.ENGINE_VARIABLE, "fast")
    with pytest.raises(ValueError, match="NAPARI_UNET_CPU_ENGINE"):
        choose_engine(tiny_model.network, CPU, engine="auto")


def test_openvino_refuses_valid_networks_and_accelerators(tiny_model):
    valid = new_model(depth=2, base_features=4, padding="valid")
    with pytest.raises(EngineError, match="same padding"):
        choose_engine(valid.network, CPU, engine="openvino")
    with pytest.raises(EngineError, match="CPU only"):
        choose_engine(tiny_model.network, torch.device("cuda"), engine="openvino")
    # auto quietly keeps PyTorch for them
    assert choose_engine(valid.network, CPU, engine="auto") == "torch"


def test_missing_openvino_says_how_to_install(tiny_model, monkeypatch, auto_engine):
    monkeypatch.setattr(engine_module, "openvino_available", lambda: False)
    assert choose_engine(tiny_model.network, CPU, engine="auto") == "torch"
    with pytest.raises(EngineError, match=r"pip install \"napari-unet-toolkit\[openvino\]\""):
        choose_engine(tiny_model.network, CPU, engine="openvino")


def test_environment_variable_keeps_pytorch(tiny_model, monkeypatch):
    monkeypatch.setenv(engine_module.ENGINE_VARIABLE, "torch")
    assert choose_engine(tiny_model.network, CPU, engine="auto") == "torch"
    monkeypatch.setenv(engine_module.ENGINE_VARIABLE, "auto")
    assert choose_engine(tiny_model.network, CPU, engine="auto") == "openvino"


@pytest.mark.parametrize("shape", [(37, 53), (8, 200), (130, 96)])
def test_openvino_probabilities_equal_pytorch_ones(tiny_model, shape):
    image = np.random.default_rng(1).normal(10, 3, shape).astype(np.float32)
    expected = _probabilities(image, tiny_model, "torch")
    got = _probabilities(image, tiny_model, "openvino")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_openvino_runs_batches_and_several_channels():
    model = new_model(
        in_channels=2, class_names=("background", "a", "b", "c"), depth=3, base_features=4, padding="same", norm="batch"
    )
    image = np.random.default_rng(2).random((90, 70, 2)).astype(np.float32)
    expected = _probabilities(image, model, "torch", channel_axis=-1, tile_size=48, batch_size=3)
    got = _probabilities(image, model, "openvino", channel_axis=-1, tile_size=48, batch_size=3)
    assert got.shape == (4, 90, 70)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_shipped_model_finds_the_same_nuclei_with_openvino():
    from napari_unet._sample_data import nuclei_sample

    image = np.asarray(nuclei_sample()[0][0])
    model = load_named_model("nuclei")
    ours = segment(image, model, device="cpu", engine="torch")
    fast = segment(image, model, device="cpu", engine="openvino")
    assert ours.n_objects > 50
    assert fast.n_objects == ours.n_objects
    assert np.mean(fast.labels > 0) == pytest.approx(np.mean(ours.labels > 0), abs=1e-4)


def _counting_conversions(monkeypatch) -> list:
    conversions = []
    real = engine_module._CompiledNetwork

    def counting(net, precision=torch.float32):
        conversions.append(net)
        return real(net, precision)

    monkeypatch.setattr(engine_module, "_CompiledNetwork", counting)
    return conversions


def test_a_network_is_converted_once_per_cache_until_its_weights_change(tiny_model, monkeypatch):
    conversions = _counting_conversions(monkeypatch)
    cache = EngineCache()
    image = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    first = _probabilities(image, tiny_model, "openvino", cache)
    _probabilities(image, tiny_model, "openvino", cache)
    assert len(conversions) == 1
    # another owner's cache does not share the conversion
    _probabilities(image, tiny_model, "openvino", EngineCache())
    assert len(conversions) == 2
    # a fine-tuning step changes the weights in place: the converted copy is stale
    with torch.no_grad():
        tiny_model.network.head.weight.mul_(2.0)
    changed = _probabilities(image, tiny_model, "openvino", cache)
    assert len(conversions) == 3
    assert np.abs(changed - first).max() > 1e-3
    np.testing.assert_allclose(changed, _probabilities(image, tiny_model, "torch"), atol=1e-5)


def test_auto_converts_only_once_enough_pixels_went_through_pytorch(tiny_model, monkeypatch, auto_engine):
    monkeypatch.setattr(engine_module, "CONVERT_AFTER_PIXELS", 3 * 64 * 64)
    net = tiny_model.network.eval()
    cache = EngineCache()
    assert _pytorch(network_runner(net, CPU, pixels=64 * 64, cache=cache), net)
    assert _pytorch(network_runner(net, CPU, pixels=64 * 64, cache=cache), net)
    runner = network_runner(net, CPU, pixels=64 * 64, cache=cache)
    assert not _pytorch(runner, net)
    np.testing.assert_allclose(runner(torch.ones(1, 1, 16, 16)), net(torch.ones(1, 1, 16, 16)).detach(), atol=1e-5)
    # converted: later small jobs of the same cache use it at once; a fresh cache counts anew
    assert not _pytorch(network_runner(net, CPU, pixels=1, cache=cache), net)
    assert _pytorch(network_runner(net, CPU, pixels=64 * 64), net)
    # new weights (a fine-tune) start counting again instead of converting at the next call
    with torch.no_grad():
        tiny_model.network.head.weight.mul_(2.0)
    assert _pytorch(network_runner(net, CPU, pixels=64 * 64, cache=cache), net)
    assert not _pytorch(network_runner(net, CPU, pixels=2 * 64 * 64, cache=cache), net)


def test_fresh_caches_give_identical_results_whatever_ran_before(tiny_model, monkeypatch, auto_engine):
    """The same call, twice in one process, gives the same numbers although much work ran in between."""
    image = np.random.default_rng(6).normal(5, 2, (64, 64)).astype(np.float32)
    monkeypatch.setattr(engine_module, "CONVERT_AFTER_PIXELS", 3 * image.size)
    conversions = _counting_conversions(monkeypatch)
    before = _probabilities(image, tiny_model, "auto")
    session = EngineCache()  # e.g. a viewer's: it converts once enough work went through it
    for _ in range(4):
        _probabilities(image, tiny_model, "auto", session)
    assert session.is_converted(tiny_model.network) and len(conversions) == 1
    after = _probabilities(image, tiny_model, "auto")
    again = _probabilities(image, tiny_model, "auto", EngineCache())
    np.testing.assert_array_equal(after, before)  # bit for bit: PyTorch both times
    np.testing.assert_array_equal(again, before)
    assert len(conversions) == 1


def test_a_failed_conversion_falls_back_to_pytorch_under_auto(tiny_model, monkeypatch, caplog, auto_engine):
    def broken(net, precision=torch.float32):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(engine_module, "_CompiledNetwork", broken)
    monkeypatch.setattr(engine_module, "CONVERT_AFTER_PIXELS", 0)
    net = tiny_model.network.eval()
    cache = EngineCache()
    with caplog.at_level(logging.WARNING, logger="napari_unet.core.inference.engine"):
        assert _pytorch(network_runner(net, CPU, cache=cache), net)
    assert "running it with PyTorch" in caplog.text
    # not tried again for the same weights by this cache; asked for by name, it is an error
    assert choose_engine(net, CPU, engine="auto", cache=cache) == "torch"
    assert choose_engine(net, CPU, engine="auto") == "openvino"  # a fresh owner would try
    with pytest.raises(EngineError, match="failed before"):
        network_runner(net, CPU, engine="openvino", cache=cache)


def test_validation_during_training_stays_with_pytorch(tiny_model, monkeypatch, auto_engine):
    from napari_unet.core.training.finetune import samples_from_arrays
    from napari_unet.core.training.loop import evaluate

    monkeypatch.setattr(engine_module, "CONVERT_AFTER_PIXELS", 0)
    conversions = _counting_conversions(monkeypatch)
    rng = np.random.default_rng(4)
    image = rng.random((48, 48)).astype(np.float32)
    labels = np.zeros((48, 48), np.uint16)
    labels[10:20, 10:20] = 1
    samples = samples_from_arrays(image, labels, tiny_model)
    evaluate(tiny_model, samples, device=CPU)
    assert conversions == []
    # while a plain prediction with the same model converts it
    cache = EngineCache()
    run_job(predict_plane_job(image[..., None], tiny_model, device=CPU, engine_cache=cache))
    assert conversions == [tiny_model.network]
    assert tiny_model.network in cache


def test_openvino_sends_no_telemetry(tmp_path):
    """Importing openvino and converting a network must not start its usage telemetry (it writes ~/intel)."""
    script = (
        "import numpy as np\n"
        "from napari_unet.core import new_model, segment\n"
        "model = new_model(depth=2, base_features=4)\n"
        "segment(np.ones((16, 16), np.float32), model, device='cpu', engine='openvino')\n"
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "print(t.tm.__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("telemetry_stub")
    assert not (tmp_path / "intel").exists()


def test_openvino_failing_on_a_tile_hands_the_job_to_pytorch(tiny_model, monkeypatch, caplog, auto_engine):
    monkeypatch.setattr(engine_module, "CONVERT_AFTER_PIXELS", 0)
    image = np.random.default_rng(5).random((40, 40)).astype(np.float32)
    expected = _probabilities(image, tiny_model, "torch")

    def out_of_memory(self, x):
        raise RuntimeError("Cannot allocate memory")

    monkeypatch.setattr(engine_module._CompiledNetwork, "__call__", out_of_memory)
    cache = EngineCache()
    with caplog.at_level(logging.WARNING, logger="napari_unet.core.inference.engine"):
        got = _probabilities(image, tiny_model, "auto", cache)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert "running the network with PyTorch" in caplog.text
    assert choose_engine(tiny_model.network, CPU, engine="auto", cache=cache) == "torch"


def test_a_job_can_be_cancelled_while_the_network_is_being_converted(tiny_model, monkeypatch):
    import threading
    import time

    release = threading.Event()
    real = engine_module._CompiledNetwork

    def slow(net, precision=torch.float32):
        release.wait(10)  # a conversion that takes as long as the test wants
        return real(net, precision)

    monkeypatch.setattr(engine_module, "_CompiledNetwork", slow)
    cache = EngineCache()
    job = predict_plane_job(
        np.ones((32, 32, 1), np.float32), tiny_model, device=CPU, engine="openvino", engine_cache=cache
    )
    first = next(job)
    assert first.stage == "prepare" and "OpenVINO" in first.message
    started = time.perf_counter()
    job.close()  # what Cancel does: the job ends at its yield, not after the conversion
    assert time.perf_counter() - started < 0.5
    release.set()
    # the conversion finishes in the background and serves the next job
    deadline = time.monotonic() + 30
    while not cache.is_converted(tiny_model.network) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.is_converted(tiny_model.network)
    stages = []
    run_job(
        predict_plane_job(
            np.ones((32, 32, 1), np.float32), tiny_model, device=CPU, engine="openvino", engine_cache=cache
        ),
        on_progress=lambda p: stages.append(p.stage),
    )
    assert "prepare" not in stages
