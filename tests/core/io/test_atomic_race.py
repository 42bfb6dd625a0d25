"""An output that appears while a job runs is never replaced without overwrite; folders are probed first."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core import load_model, new_model, save_model
from napari_unet.core.io import atomic
from napari_unet.core.io.atomic import OutputError, atomic_output, probe_writable
from napari_unet.core.io.ome_zarr import ZarrOutput
from napari_unet.core.io.tiff import write_labels, write_probabilities


def _other_writer(path: Path, data: bytes = b"written by someone else") -> None:
    """Another program creating ``path`` now, from its own thread."""
    thread = threading.Thread(target=path.write_bytes, args=(data,))
    thread.start()
    thread.join()


def _parts(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".part" in p.name]


def test_a_file_appearing_while_the_body_writes_is_kept_and_the_write_refused(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(OutputError, match="already exists and was left as it is.*--overwrite"):
        with atomic_output(path, overwrite=False) as fh:
            fh.write(b"mine")
            _other_writer(path)
    assert path.read_bytes() == b"written by someone else"
    assert _parts(tmp_path) == []


def test_without_hard_links_the_name_is_still_never_taken_from_another_writer(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    atomic.atomic_write_bytes(tmp_path / "new.bin", b"fresh", overwrite=False)
    assert (tmp_path / "new.bin").read_bytes() == b"fresh"

    path = tmp_path / "out.bin"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(path, overwrite=False) as fh:
            fh.write(b"mine")
            _other_writer(path)
    assert path.read_bytes() == b"written by someone else"
    assert _parts(tmp_path) == []


@pytest.fixture
def appears_at_commit(monkeypatch):
    """Make the output appear (from another thread) once its temporary file exists: mid-write."""
    made = atomic._create_temporary

    def create_then_collide(folder, name):
        tmp = made(folder, name)
        _other_writer(Path(folder) / name)
        return tmp

    monkeypatch.setattr(atomic, "_create_temporary", create_then_collide)


def test_tiff_writes_without_overwrite_keep_a_file_that_appeared(tmp_path, appears_at_commit):
    labels, probs = tmp_path / "labels.tif", tmp_path / "probs.tif"
    with pytest.raises(OutputError, match="labels.tif' already exists"):
        write_labels(labels, np.ones((8, 8), np.uint8), overwrite=False)
    with pytest.raises(OutputError, match="probs.tif' already exists"):
        write_probabilities(probs, np.zeros((2, 8, 8), np.float32), axes="CYX", overwrite=False)
    assert labels.read_bytes() == probs.read_bytes() == b"written by someone else"
    assert _parts(tmp_path) == []


def test_save_model_without_overwrite_keeps_a_file_that_appeared(tmp_path, appears_at_commit):
    path = tmp_path / "m.unet.safetensors"
    with pytest.raises(OutputError, match="already exists"):
        save_model(new_model(depth=2, base_features=4), path, overwrite=False)
    assert path.read_bytes() == b"written by someone else"


def test_save_model_replaces_by_default_and_refuses_an_existing_file_without_overwrite(tmp_path):
    path = tmp_path / "m.unet.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        save_model(new_model(depth=2, base_features=4), path, overwrite=False)
    assert path.read_bytes() == b"old"
    save_model(new_model(depth=2, base_features=4), path)
    assert load_model(path).config.depth == 2


def _zarr_output(path: Path, *, overwrite: bool = False) -> ZarrOutput:
    target = ZarrOutput(path, shape=(8, 8), dtype=np.uint8, chunks=(8, 8), axes="YX", overwrite=overwrite)
    target.array(0)[:] = 7
    return target


@pytest.mark.parametrize("what", ["folder with data", "empty folder", "file"])
def test_zarr_commit_keeps_what_appeared_and_the_new_result_beside_it(tmp_path, what):
    import zarr

    path = tmp_path / "result.zarr"
    target = _zarr_output(path)
    if what == "file":
        _other_writer(path)
    else:
        path.mkdir()  # another run finished first
        if what == "folder with data":
            _other_writer(path / "precious.bin")
    with pytest.raises(OutputError, match="already exists and was left as it is.*kept as") as caught:
        target.commit()
    if what == "file":
        assert path.read_bytes() == b"written by someone else"
    elif what == "empty folder":
        assert path.is_dir() and list(path.iterdir()) == []
    else:
        assert [p.name for p in path.iterdir()] == ["precious.bin"]
        assert (path / "precious.bin").read_bytes() == b"written by someone else"
    kept = next(tmp_path.glob("result.unsaved-*.zarr"))
    assert str(kept) in str(caught.value)
    assert np.all(zarr.open_group(str(kept), mode="r")["0"][:] == 7)
    target.discard()  # what a failed job does: the kept result stays
    assert kept.is_dir() and _parts(tmp_path) == []


def test_zarr_commit_with_overwrite_replaces_and_without_it_writes_a_new_name(tmp_path):
    path = tmp_path / "result.zarr"
    assert _zarr_output(path).commit() == path
    old = _zarr_output(path, overwrite=True)
    (path / "stale").write_bytes(b"x")
    old.commit()
    assert not (path / "stale").exists() and (path / "0").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.zarr"]


def test_probe_says_when_the_folder_is_under_a_regular_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for create in (False, True):
        with pytest.raises(OutputError, match=r"notes.txt' is a file, not a folder, so nothing can be written"):
            probe_writable(tmp_path / "notes.txt" / "out", create=create)


def test_probe_creates_a_missing_folder_only_when_asked_and_leaves_nothing(tmp_path):
    with pytest.raises(OutputError, match="does not exist; create it"):
        probe_writable(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    probe_writable(tmp_path / "new" / "deep", create=True)
    assert list((tmp_path / "new" / "deep").iterdir()) == []


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, "is on a read-only file system"),
        (errno.ENOSPC, "is full; free space"),
        (errno.EACCES, "no permission to write in"),
    ],
)
def test_probe_names_why_a_folder_cannot_be_written(tmp_path, monkeypatch, code, words):
    def refuse(folder, name):
        raise (PermissionError if code == errno.EACCES else OSError)(code, os.strerror(code))

    monkeypatch.setattr(atomic, "_create_temporary", refuse)
    with pytest.raises(OutputError, match=words):
        probe_writable(tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_probe_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="no permission to write in"):
            probe_writable(folder)
    finally:
        folder.chmod(0o755)


def test_probe_finds_a_disk_that_takes_no_more_blocks_and_leaves_no_probe(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    class FullDisk:
        def __init__(self, path, mode):
            self.fh = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "open", FullDisk, raising=False)
    with pytest.raises(OutputError, match="is full; free space or choose another output folder"):
        probe_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
