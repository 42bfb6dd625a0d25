"""Shared fixtures: paths to the shared data and tiny models for fast CPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_API", "pyqt6")
os.environ.setdefault("PYTEST_QT_API", "pyqt6")  # pytest-qt, where installed, uses the same binding as qtpy
# PyTorch runs the networks unless a test asks for OpenVINO (tests/core/inference/test_engine.py):
# results then do not depend on how much work a test process did before
os.environ.setdefault("NAPARI_UNET_CPU_ENGINE", "torch")
# float32 on the CPU unless a test asks for bfloat16 (tests/core/inference/test_cpu_precision.py):
# the tests that compare tilings, paths and engines mean "equal to float32 rounding", and the
# same suite must pass on processors with and without bfloat16 units
os.environ.setdefault("NAPARI_UNET_CPU_AMP", "off")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Settings that only apply where the GUI test tools are installed.

    The core tests also run with nothing but pytest, numpy and torch (``tox -e core``), so
    this cannot sit in ``pyproject.toml``: there pytest refuses an unknown option.
    """
    if config.pluginmanager.hasplugin("xvfb") and getattr(config.option, "xvfb_backend", None) is None:
        # a missing Xvfb is then a clear usage error, not a Qt abort in the middle of the run
        config.option.xvfb_backend = "xvfb"


@pytest.fixture(autouse=True)
def _private_models_folder(tmp_path_factory, monkeypatch) -> Path:
    """Every test saves accepted fine-tuned models into a folder of its own, never the user's."""
    folder = tmp_path_factory.mktemp("user-models")
    monkeypatch.setenv("NAPARI_UNET_MODELS_DIR", str(folder))
    return folder


#: The shared annotated data sets (``../shared/data`` from the repository root).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the shared data sets; the suite needs it (it is there in CI too)."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(f"the shared data folder {SHARED_DATA} is missing; tests need ../shared/data")
    return SHARED_DATA


@pytest.fixture
def tiny_model():
    """An untrained, very small three-class model (fast on the CPU)."""
    from napari_unet.core import new_model

    return new_model(depth=2, base_features=4, padding="same", name="tiny test model")


@pytest.fixture
def tiny_model_file(tmp_path, tiny_model) -> Path:
    """``tiny_model`` saved to a model file."""
    from napari_unet.core import save_model

    return save_model(tiny_model, tmp_path / "tiny.unet.safetensors")


@pytest.fixture(scope="session")
def nuclei_crop(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """A 128 x 128 crop of a DSB 2018 fluorescence nuclei image and its instance labels (val split)."""
    import tifffile

    name = sorted((shared_data / "dsb2018_nuclei" / "val" / "images").glob("*.tif"))[0].name
    image = tifffile.imread(shared_data / "dsb2018_nuclei" / "val" / "images" / name)
    labels = tifffile.imread(shared_data / "dsb2018_nuclei" / "val" / "labels" / name)
    return image[:128, :128], labels[:128, :128]


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real, nearly empty 1 MiB file system (tmpfs) mounted on a folder, for full-disk tests.

    Mounting needs root (the test machines run the tests as root); elsewhere the test is skipped.
    """
    import shutil
    import subprocess

    folder = tmp_path / "small_disk"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a 1 MiB tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"needs root to mount a 1 MiB tmpfs ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
