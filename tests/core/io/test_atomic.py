"""Atomic writes: permissions like a plain open(), faults that leave the previous file intact."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core import new_model, save_model
from napari_unet.core.io import atomic
from napari_unet.core.io.atomic import OutputError, atomic_output, atomic_write_bytes
from napari_unet.core.io.tiff import write_labels


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_file_gets_the_permissions_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain.bin", "wb") as fh:
        fh.write(b"x")
    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    assert _mode(tmp_path / "atomic.bin") == _mode(tmp_path / "plain.bin") == 0o666 & ~mask


def test_saved_model_and_export_are_readable_by_others_under_the_usual_umask(tmp_path, umask):
    umask(0o022)
    model_path = save_model(new_model(depth=2, base_features=4), tmp_path / "m.unet.safetensors")
    export = write_labels(tmp_path / "labels.tif", np.arange(16, dtype=np.uint8).reshape(4, 4)).path
    assert _mode(model_path) == 0o644
    assert _mode(export) == 0o644


def test_replaced_file_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "private.bin"
    path.write_bytes(b"old")
    path.chmod(0o600)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600


def test_temporary_names_never_collide_with_an_existing_file(tmp_path, monkeypatch):
    from napari_unet.core.io.leftovers import partial_name

    tokens = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens))
    taken = tmp_path / partial_name("f.bin", "aaaa")
    taken.write_bytes(b"someone else's")
    atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert (tmp_path / "f.bin").read_bytes() == b"data"
    assert taken.read_bytes() == b"someone else's"


def test_full_disk_while_writing_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"previous")
    with pytest.raises(OutputError, match="disk is full"):
        with atomic_output(path) as fh:
            fh.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_unwritable_folder_is_an_output_error(tmp_path, monkeypatch):
    def refuse(folder, name):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic, "_create_temporary", refuse)
    with pytest.raises(OutputError, match="no permission to write"):
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert list(tmp_path.iterdir()) == []


# --- a process killed while it writes ---------------------------------------------------------

_KILLED_WRITER = r"""
import os, sys, time
from pathlib import Path
import numpy as np
from napari_unet.core.io import atomic
from napari_unet.core import new_model, save_model
from napari_unet.core.io.tiff import write_labels

kind, target, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def stall(fd):  # every byte is out, the rename has not happened: the worst moment to die
    ready.write_text("writing")
    time.sleep(60)

atomic.os.fsync = stall
if kind == "model":
    save_model(new_model(depth=2, base_features=4, name="newer"), target)
else:
    write_labels(target, np.full((16, 16), 9, np.uint8), overwrite=True)
"""


@pytest.mark.parametrize("kind", ["model", "export"])
def test_a_process_killed_while_writing_leaves_the_previous_file_intact(tmp_path, kind):
    import signal
    import subprocess
    import sys
    import time

    from napari_unet.core import load_model

    if kind == "model":
        target = save_model(new_model(depth=2, base_features=4, name="older"), tmp_path / "m.unet.safetensors")
    else:
        target = write_labels(tmp_path / "labels.tif", np.ones((16, 16), np.uint8)).path
    before = target.read_bytes()
    ready = tmp_path / "ready"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(atomic.__file__).parents[3]), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, kind, str(target), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, "the writer ended before it stalled"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert target.read_bytes() == before
    if kind == "model":
        assert load_model(target).description.name == "older"
    # the killed process could not remove its temporary file, but it is hidden and named as one
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (target.name, "ready")]
    assert all(name.startswith(f".{target.name}.") and name.endswith(".part") for name in leftovers)


# --- a real full disk (a 1 MiB tmpfs) ---------------------------------------------------------


def test_a_real_full_disk_names_the_folder_and_keeps_the_previous_file(small_disk):
    path = small_disk / "f.bin"
    path.write_bytes(b"previous")
    with pytest.raises(OutputError, match="disk is full") as caught:
        atomic_write_bytes(path, os.urandom(3_000_000))
    message = str(caught.value)
    assert f"the disk holding {str(small_disk)!r}" in message and "write elsewhere" in message
    assert path.read_bytes() == b"previous"
    assert [p.name for p in small_disk.iterdir()] == ["f.bin"]


def test_a_short_write_without_errno_is_a_full_disk(tmp_path):
    # numpy's tofile (used by tifffile) says "N requested and M written" and sets no errno
    with pytest.raises(OutputError, match="disk is full") as caught:
        with atomic_output(tmp_path / "f.bin") as fh:
            fh.write(b"x" * 1000)
            raise OSError("5000000 requested and 1000 written")
    assert "needs at least 5 MB" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(OutputError, match="failed") as caught:
        with atomic_output(tmp_path / "f.bin"):
            raise OSError(errno.EIO, "Input/output error")
    assert "disk is full" not in str(caught.value)
