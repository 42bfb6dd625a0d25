"""A batch never replaces an output that another program writes while the batch runs (without overwrite)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.core.batch.files import segment_files
from napari_unet.core.batch.zarr_files import segment_files_to_zarr_job
from napari_unet.core.progress import Stage, run_job

OTHER = b"written by someone else"


@pytest.fixture
def images(tmp_path, nuclei_crop):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, nuclei_crop[0])
    return folder


class OtherWriter:
    """A progress callback that, once ``name``'s work has begun, lets another thread write ``make(target)``."""

    def __init__(self, target: Path, make, *, at: Stage | None = None) -> None:
        self.target, self.make, self.at = target, make, at
        self.running_on: str | None = None
        self.done = False

    def __call__(self, report) -> None:
        if report.stage == Stage.FILE_START:
            self.running_on = report.message
            return
        if self.done or self.running_on != "a.tif" or (self.at is not None and report.stage != self.at):
            return
        thread = threading.Thread(target=self.make, args=(self.target,))
        thread.start()
        thread.join()
        self.done = True


def test_a_tiff_written_meanwhile_fails_its_input_and_stays_byte_identical(tmp_path, images, tiny_model):
    out = tmp_path / "out"
    writer = OtherWriter(out / "a.tif", lambda path: path.write_bytes(OTHER))
    rows = segment_files([images], model=tiny_model, output_folder=out, device="cpu", on_progress=writer)

    assert writer.done
    assert (out / "a.tif").read_bytes() == OTHER
    assert [(Path(r.file).name, r.status) for r in rows] == [("a.tif", "failed"), ("b.tif", "ok")]
    assert "already exists and was left as it is" in rows[0].message
    assert not [p for p in out.iterdir() if ".part" in p.name]


def test_with_overwrite_the_batch_replaces_what_was_written_meanwhile(tmp_path, images, tiny_model):
    out = tmp_path / "out"
    writer = OtherWriter(out / "a.tif", lambda path: path.write_bytes(OTHER))
    rows = segment_files(
        [images / "a.tif"], model=tiny_model, output_folder=out, device="cpu", overwrite=True, on_progress=writer
    )
    assert writer.done and rows[0].status == "ok"
    assert tifffile.imread(out / "a.tif").shape == (128, 128)


def _folder_with_data(path: Path) -> None:
    path.mkdir()
    (path / "precious.bin").write_bytes(OTHER)


def test_a_zarr_folder_written_meanwhile_keeps_its_contents_and_the_result_is_kept_beside(tmp_path, images, tiny_model):
    import zarr

    out = tmp_path / "out"
    writer = OtherWriter(out / "a_labels.zarr", _folder_with_data, at=Stage.BLOCKS)
    rows = run_job(
        segment_files_to_zarr_job(
            [images], model=tiny_model, output_folder=out, device="cpu", block_size=64, margin=16
        ),
        on_progress=writer,
    )

    assert writer.done
    target = out / "a_labels.zarr"
    assert [p.name for p in target.iterdir()] == ["precious.bin"]
    assert (target / "precious.bin").read_bytes() == OTHER
    assert [(Path(r.file).name, r.status) for r in rows] == [("a.tif", "failed"), ("b.tif", "ok")]
    kept = next(out.glob("a_labels.unsaved-*.zarr"))
    assert f"kept as '{kept}'" in rows[0].message
    assert zarr.open_group(str(kept), mode="r")["0"].shape == (128, 128)
    assert np.asarray(zarr.open_group(str(out / "b_labels.zarr"), mode="r")["0"]).shape == (128, 128)
