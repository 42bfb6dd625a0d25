"""bioimage.io model packages: export passes bioimage.io's own test, import round-trips, others are refused."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import zipfile

import numpy as np
import pytest
import torch

from napari_unet.core import ModelFileError, load_model, load_named_model, new_model
from napari_unet.core.errors import UserError
from napari_unet.core.inference.segmentation import segment
from napari_unet.core.network import bioimageio_requirements as req
from napari_unet.core.network.bioimageio_architecture import CALLABLE_NAME, NapariUNet, architecture_source
from napari_unet.core.network.bioimageio_texts import instance_rule_text, normalization_text
from napari_unet.core.network.geometry import halo, output_size
from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.normalization import Normalization


def _usable() -> str:
    """Why bioimage.io packages cannot be made here ("" when they can)."""
    try:
        req.bioimageio_spec()
    except UserError as exc:
        return str(exc)
    return ""


needs_bioimageio = pytest.mark.skipif(bool(_usable()), reason=f"bioimage.io libraries unusable: {_usable()}")


@pytest.fixture
def tiny_valid_model():
    torch.manual_seed(0)
    return new_model(depth=2, base_features=4, padding="valid", norm="batch", name="tiny valid model")


def _bioimageio_test(path):
    from bioimageio.core import test_model

    with req.quiet_bioimageio():
        summary = test_model(path)
        failed = [d.name for d in summary.details if d.status == "failed"]
        status = summary.status
        del summary
    return status, failed


# ---------------------------------------------------------------------- without the bioimage.io libraries


def test_architecture_file_needs_no_napari_unet_and_builds_the_same_network(tmp_path, monkeypatch, tiny_model):
    source = architecture_source()
    imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import | ast.ImportFrom)]
    modules = {n.module for n in imports if isinstance(n, ast.ImportFrom)} | {
        a.name for n in imports if isinstance(n, ast.Import) for a in n.names
    }
    assert not any(str(m).startswith("napari_unet") for m in modules), modules
    path = tmp_path / "arch.py"
    path.write_text(source)
    monkeypatch.setitem(sys.modules, "napari_unet", None)  # importing napari-unet from the file would fail
    spec = importlib.util.spec_from_file_location("standalone_arch", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "standalone_arch", module)
    spec.loader.exec_module(module)
    net = getattr(module, CALLABLE_NAME)(**tiny_model.config.to_dict())
    net.load_state_dict(tiny_model.network.state_dict())
    net.eval()
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        expected = torch.softmax(tiny_model.network(x), dim=1)
        assert torch.equal(net(x), expected)
    in_process = NapariUNet(**tiny_model.config.to_dict())
    in_process.load_state_dict(tiny_model.network.state_dict())
    with torch.no_grad():
        assert torch.equal(in_process.eval()(x), expected)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("depth", [2, 4, 5])
def test_every_declared_input_size_is_valid(padding, depth):
    from napari_unet.core.network.bioimageio_export import package_geometry

    model = new_model(depth=depth, base_features=2, padding=padding)
    min_size, step, margin = package_geometry(model)
    for n in range(6):
        size = min_size + n * step
        out = output_size(model.config, size)
        assert out == size - 2 * halo(model.config), (size, out)
        assert out > 2 * (margin if padding == "same" else 0)


def test_a_missing_library_names_what_to_install(monkeypatch):
    real = importlib.import_module

    def no_bioimageio(name, *args):
        if name.startswith("bioimageio"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args)

    monkeypatch.setattr(req.importlib, "import_module", no_bioimageio)
    with pytest.raises(req.BioimageioMissing, match=r"napari-unet-toolkit\[bioimageio\]"):
        req.bioimageio_spec()


def test_the_pydantic_clash_is_named(monkeypatch):
    versions = {"bioimageio.spec": (0, 5, 12), "pydantic": (2, 14, 4)}
    monkeypatch.setattr(req, "_release", versions.__getitem__)
    with pytest.raises(req.BioimageioMissing, match=r"pydantic<2.14"):
        req._check_pydantic()
    versions["pydantic"] = (2, 13, 5)
    req._check_pydantic()


def test_texts_say_what_is_exact_and_name_the_classes():
    assert "approximately" in normalization_text(Normalization(kind="zscore"))
    assert "approximately" not in normalization_text(Normalization(kind="range", low=0, high=255))
    assert "1st" not in normalization_text(Normalization()) and "99.8th" in normalization_text(Normalization())
    rule = InstanceRule(method="seeded_watershed", foreground_classes=[1, 2], seed_classes=[1], min_size=30)
    text = instance_rule_text(rule, ["background", "interior", "boundary"])
    assert "1 (interior)" in text and "2 (boundary)" in text and "30 pixels" in text
    threshold = InstanceRule(method="seeded_watershed", foreground_classes=[1], seed_classes=[1], seed_threshold=0.9)
    assert "exceeds 0.9" in instance_rule_text(threshold, ["membrane", "cell"])
    assert "4-connected component" in instance_rule_text(InstanceRule(), ["background", "cell"])


def test_a_zip_that_is_no_package_is_refused_before_any_library_is_needed(tmp_path, monkeypatch):
    from napari_unet.core.network import bioimageio_import

    monkeypatch.setattr(bioimageio_import, "bioimageio_spec", lambda: pytest.fail("the libraries were asked for"))
    path = tmp_path / "weights.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.pt", b"not a package")
    with pytest.raises(ModelFileError, match="not a bioimage.io model package"):
        load_model(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelFileError, match="not a bioimage.io model package"):
        load_model(path)


# ---------------------------------------------------------------------- with them


@needs_bioimageio
@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_valid_model"])
def test_exported_tiny_models_pass_bioimageio_test_and_round_trip(fixture, request, tmp_path, nuclei_crop):
    from napari_unet.core.network.bioimageio_export import export_bioimageio

    model = request.getfixturevalue(fixture)
    path = export_bioimageio(model, tmp_path / "tiny.zip", sample=nuclei_crop[0], authors=["Test Author"])
    assert _bioimageio_test(path) == ("passed", [])
    back = load_model(path)
    assert back.description.to_dict() == model.description.to_dict()
    assert back.source == path
    image = nuclei_crop[0][:96, :80]
    before = segment(image, model, output_kind="probabilities", device="cpu").probabilities
    after = segment(image, back, output_kind="probabilities", device="cpu").probabilities
    assert np.array_equal(before, after)


@needs_bioimageio
@pytest.mark.slow
def test_a_shipped_model_passes_bioimageio_test_and_round_trips(tmp_path):
    from napari_unet.core.network.bioimageio_export import export_bioimageio

    model = load_named_model("nuclei")
    path = export_bioimageio(model, tmp_path / "nuclei.zip")
    assert _bioimageio_test(path) == ("passed", [])
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"weights.pt", "weights_torchscript.pt", "cover.png", "test_input.npy", "test_output.npy"} <= names
    assert "scale_range" in readme and "seeded watershed" in readme and "30 pixels" in readme
    back = load_model(path)
    original = model.network.state_dict()
    assert all(torch.equal(original[k].float(), v.float()) for k, v in back.network.state_dict().items())


def _rewrite_rdf(path, old: str, new: str, out):
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "rdf.yaml":
                text = data.decode()
                assert old in text
                data = text.replace(old, new).encode()
            dst.writestr(info, data)
    return out


@needs_bioimageio
def test_foreign_architecture_damaged_files_and_missing_description_are_refused(tmp_path, tiny_model, nuclei_crop):
    from napari_unet.core.network.bioimageio_export import export_bioimageio

    path = export_bioimageio(tiny_model, tmp_path / "tiny.zip", sample=nuclei_crop[0])
    foreign = _rewrite_rdf(path, f"callable: {CALLABLE_NAME}", "callable: ResidualUNet3D", tmp_path / "foreign.zip")
    with pytest.raises(ModelFileError, match=r"'ResidualUNet3D'.*not napari-unet's U-Net"):
        load_model(foreign)
    bare = _rewrite_rdf(path, "  napari_unet:\n", "  other_tool:\n", tmp_path / "bare.zip")
    with pytest.raises(ModelFileError, match="not its description"):
        load_model(bare)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:-8] + b"\0" * 8 if info.filename == "weights.pt" else data)
    with pytest.raises(ModelFileError, match="not a valid bioimage.io model package"):
        load_model(damaged)


@needs_bioimageio
def test_export_refusals(tmp_path, tiny_model):
    from napari_unet.core.io.atomic import OutputError
    from napari_unet.core.network.bioimageio_export import ExportError, export_bioimageio

    rgb = new_model(in_channels=3, depth=2, base_features=4)
    with pytest.raises(ExportError, match="3 channels"):
        export_bioimageio(rgb, tmp_path / "rgb.zip")
    with pytest.raises(ExportError, match="smaller than the model's smallest input"):
        export_bioimageio(tiny_model, tmp_path / "small.zip", sample=np.zeros((3, 3)))
    with pytest.raises(ExportError, match="author"):
        export_bioimageio(tiny_model, tmp_path / "anon.zip", authors=[" "])
    existing = tmp_path / "existing.zip"
    existing.write_bytes(b"keep me")
    with pytest.raises((ExportError, OutputError), match="already exists"):
        export_bioimageio(tiny_model, existing)
    assert existing.read_bytes() == b"keep me"
