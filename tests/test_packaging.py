"""The distribution's name, the npe2 plugin's name and the wheel agree, and a foreign napari-unet is named."""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from napari_unet import _distribution
from napari_unet._distribution import DISTRIBUTION, FOREIGN_DISTRIBUTION, install_conflict
from napari_unet.cli import main

ROOT = Path(__file__).parent.parent
MANIFEST = ROOT / "src" / "napari_unet" / "napari.yaml"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_distribution_plugin_and_entry_point_names_agree():
    project = _project()
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert project["name"] == DISTRIBUTION == manifest["name"] != FOREIGN_DISTRIBUTION
    assert list(project["entry-points"]["napari.manifest"]) == [DISTRIBUTION]
    ids = [c["id"] for c in manifest["contributions"]["commands"]]
    assert ids and all(i.startswith(f"{DISTRIBUTION}.") for i in ids)
    assert project["requires-python"] == ">=3.11"
    assert any(d.startswith("roifile") for d in project["dependencies"])


def test_the_installed_distribution_of_napari_unet_is_this_one():
    owners = importlib.metadata.packages_distributions().get("napari_unet")
    if not owners:
        pytest.skip("napari_unet is imported from a path, not installed (nothing to check)")
    # an editable install under the former name shows here: pip uninstall -y napari-unet && pip install -e .
    assert set(owners) == {DISTRIBUTION}, install_conflict()


def _fake_distribution(tmp_path: Path, summary: str, version: str):
    info = tmp_path / f"napari_unet-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.4\nName: napari-unet\nVersion: {version}\nSummary: {summary}\n"
    )
    found = importlib.metadata.PathDistribution(info)

    def lookup(name: str) -> importlib.metadata.Distribution:
        if name != FOREIGN_DISTRIBUTION:
            raise importlib.metadata.PackageNotFoundError(name)
        return found

    return lookup


def test_install_conflict_names_the_other_project_and_the_fix(tmp_path):
    lookup = _fake_distribution(
        tmp_path, "A Napari plugin allowing to train and run inference of a UNet model.", "1.0.0"
    )
    message = install_conflict(lookup)
    assert message is not None
    assert "'napari-unet' 1.0.0" in message and "another project (A Napari plugin allowing" in message
    assert f"pip uninstall -y napari-unet {DISTRIBUTION}" in message and "pip install -e ." in message


def test_install_conflict_names_an_old_install_of_this_project(tmp_path):
    lookup = _fake_distribution(tmp_path, "U-Net segmentation for napari: segment, correct", "0.1.0")
    message = install_conflict(lookup)
    assert message is not None and "an old install of this project under its former name" in message


def test_cli_warns_about_a_foreign_napari_unet_and_still_runs(tmp_path, monkeypatch, capsys):
    lookup = _fake_distribution(tmp_path, "Another plugin.", "1.0.0")
    monkeypatch.setattr(_distribution, "install_conflict", functools.partial(install_conflict, lookup))
    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    assert "nuclei" in out
    assert err.startswith("warning: the distribution 'napari-unet' 1.0.0 is installed") and "pip uninstall" in err


@pytest.mark.slow
def test_the_built_wheel_is_named_and_declares_the_plugin(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("napari_unet_toolkit-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        manifest = yaml.safe_load(archive.read("napari_unet/napari.yaml"))
    assert f"Name: {DISTRIBUTION}\n" in metadata and "Requires-Python: >=3.11" in metadata
    assert f"{DISTRIBUTION} = napari_unet:napari.yaml" in entry_points
    assert "napari-unet = napari_unet.cli:main" in entry_points
    assert manifest["name"] == DISTRIBUTION
    assert "napari_unet/models/nuclei.unet.safetensors" in names
