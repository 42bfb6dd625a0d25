"""The command line's answers to option values it cannot use and to Ctrl-C at any moment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_unet
from napari_unet import cli
from napari_unet.cli import main

_SRC = str(Path(napari_unet.__file__).parents[1])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--scheduler", "loca"], "--scheduler must be 'local' or the address of a running dask scheduler"),
        (["--scheduler", "http://node7:8786"], "--scheduler must be 'local'"),
        (["--scheduler", "tcp://node7:port"], "--scheduler must be 'local'"),
        (["--scheduler", "local", "--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2"], "--workers sets the size of a local cluster; give it with --scheduler local"),
        (["--margin", "-5"], "--margin must be 0 or more"),
    ],
)
def test_option_values_that_cannot_work_are_refused_before_anything(tmp_path, capsys, options, expected):
    source = tmp_path / "a.tif"
    tifffile.imwrite(source, np.zeros((32, 32), np.uint8))
    code = main(["segment", str(source), "--model", "no-such-model", "-o", str(tmp_path / "a.zarr"), *options])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and "no-such-model" not in err  # before loading a model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "node7:8786", "tls://[::1]:8786", "local"])
def test_scheduler_addresses_and_local_pass_the_check(address):
    args = cli._build_parser().parse_args(["segment", "a.tif", "--model", "m", "-o", "o.zarr", "--scheduler", address])
    assert cli._option_problem(args) is None


def test_ctrl_c_while_the_core_is_imported_is_a_clean_cancel(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name.startswith("napari_unet.core"):  # the first import of the core, whichever module
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert main(["models"]) == 130
    assert "cancelled" in capsys.readouterr().err


_INTERRUPTED_START = r"""
import builtins, sys
real_import = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        raise KeyboardInterrupt  # Ctrl-C while the slowest import of the start-up runs
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupted
from napari_unet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_the_start_up_imports_exits_130_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_START, "models"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert "cancelled" in done.stderr and "Traceback" not in done.stderr


def _annotated(tmp_path: Path, nuclei_crop) -> list[str]:
    image, labels = nuclei_crop
    tifffile.imwrite(tmp_path / "a.tif", image[:96, :80])
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "lab" / "a.tif", labels[:96, :80])
    return [str(tmp_path / "a.tif"), "--labels", str(tmp_path / "lab")]


def test_a_patch_size_beyond_every_training_image_is_refused(tmp_path, nuclei_crop, tiny_model_file, capsys):
    out = tmp_path / "out.unet.safetensors"
    args = ["train", *_annotated(tmp_path, nuclei_crop), "--from", str(tiny_model_file), "-o", str(out)]
    code = main([*args, "--steps", "1", "--patch-size", "4096", "--device", "cpu", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--patch-size 4096 is larger than every training image (the largest side is 96 pixels)" in err
    assert "--patch-size 96 or less" in err and not out.exists()


def test_the_default_patch_size_shrinks_to_small_images(tmp_path, nuclei_crop, tiny_model_file, capsys):
    from napari_unet.core import load_model

    out = tmp_path / "out.unet.safetensors"
    args = ["train", *_annotated(tmp_path, nuclei_crop), "--from", str(tiny_model_file), "-o", str(out)]
    assert main([*args, "--steps", "1", "--batch-size", "1", "--device", "cpu", "--quiet"]) == 0
    assert "patch size 96 (the largest image side; the default is 128)" in capsys.readouterr().out
    assert load_model(out).description.training_history[-1]["settings"]["patch_size"] == 96


_CONVERSION_MARKED = r"""
import signal, sys, pathlib
# Ctrl-C raises KeyboardInterrupt, as in a terminal, even if the test process happens to ignore SIGINT
# (a child inherits an ignored SIGINT, and Python then installs no handler for it)
signal.signal(signal.SIGINT, signal.default_int_handler)
from napari_unet.core.inference import engine
marker = pathlib.Path(sys.argv[1])
real = engine._CompiledNetwork.__init__
def init(self, net, *args):
    marker.write_text("converting")  # the moment to press Ctrl-C: OpenVINO is converting the network
    real(self, net, *args)
engine._CompiledNetwork.__init__ = init
from napari_unet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_while_openvino_converts_exits_130_without_an_abort(tmp_path):
    import signal
    import time

    pytest.importorskip("openvino")
    from napari_unet.core import new_model, save_model

    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8))
    model = save_model(new_model(depth=4, base_features=32, padding="same"), tmp_path / "m.unet.safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SRC, os.environ.get("PYTHONPATH", "")])}
    args = ["segment", str(image), "--model", str(model), "-o", str(tmp_path / "out.tif"), "--engine", "openvino"]
    for trial in range(4):  # the abort came in about half of the runs
        marker = tmp_path / f"converting-{trial}"
        child = subprocess.Popen(
            [sys.executable, "-c", _CONVERSION_MARKED, str(marker), *args, "--device", "cpu", "--quiet"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not marker.exists():
                assert child.poll() is None, child.stderr.read() if child.stderr else ""
                assert time.monotonic() < deadline, "the conversion never started"
                time.sleep(0.01)
            time.sleep(0.05 * trial)
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == 130, (
            f"trial {trial} (Ctrl-C {0.05 * trial:.2f} s into the conversion; SIGINT in the test process: "
            f"{signal.getsignal(signal.SIGINT)}): {err}"
        )
        assert "terminate called" not in err and "cancelled" in err and "Warning" not in err
        assert not (tmp_path / "out.tif").exists()
