"""``napari-unet export-bioimageio`` and bioimage.io packages given to ``segment --model``."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.errors import UserError
from napari_unet.core.network import bioimageio_requirements as req


def _unusable() -> str:
    try:
        req.bioimageio_spec()
    except UserError as exc:
        return str(exc)
    return ""


needs_bioimageio = pytest.mark.skipif(bool(_unusable()), reason=f"bioimage.io libraries unusable: {_unusable()}")


@needs_bioimageio
def test_export_then_segment_with_the_package(tmp_path, tiny_model_file, nuclei_crop, capsys):
    image, _ = nuclei_crop
    sample = tmp_path / "sample.tif"
    tifffile.imwrite(sample, image)
    package = tmp_path / "tiny.zip"
    args = ["export-bioimageio", str(tiny_model_file), str(package), "--sample", str(sample), "--author", "A. Tester"]
    assert main(args) == 0
    assert "tiny.zip (bioimage.io model package)" in capsys.readouterr().out
    assert main(args) == 2  # never replaced without --overwrite
    assert "already exists" in capsys.readouterr().err
    for model in (tiny_model_file, package):
        out = tmp_path / f"{model.name}.tif"
        assert main(["segment", str(sample), "--model", str(model), "-o", str(out), "--device", "cpu"]) == 0
    assert np.array_equal(
        tifffile.imread(tmp_path / f"{tiny_model_file.name}.tif"), tifffile.imread(tmp_path / "tiny.zip.tif")
    )


def test_output_must_be_a_zip(tmp_path, capsys):
    assert main(["export-bioimageio", "nuclei", str(tmp_path / "nuclei.unet.safetensors")]) == 2
    assert ".zip" in capsys.readouterr().err
    assert not (tmp_path / "nuclei.unet.safetensors").exists()


def test_missing_libraries_are_one_error_line(tmp_path, monkeypatch, capsys):
    real = importlib.import_module

    def no_bioimageio(name, *args):
        if name.startswith("bioimageio"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args)

    monkeypatch.setattr(req.importlib, "import_module", no_bioimageio)
    assert main(["export-bioimageio", "nuclei", str(tmp_path / "nuclei.zip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and 'pip install "napari-unet-toolkit[bioimageio]"' in err
    assert not (tmp_path / "nuclei.zip").exists()
