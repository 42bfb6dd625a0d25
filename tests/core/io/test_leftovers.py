"""Leftovers of a killed writer: recognisable, reported, removed once their process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.io import leftovers
from napari_unet.core.io.atomic import atomic_write_bytes
from napari_unet.core.io.leftovers import MIN_AGE_SECONDS, LeftoverWarning, clean_leftovers, partial_name

_SRC = str(Path(leftovers.__file__).parents[3])

_KILLED = r"""
import sys, time
from pathlib import Path
import numpy as np
kind, target, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if kind == "file":
    from napari_unet.core.io.atomic import atomic_output
    with atomic_output(target) as fh:
        for k in range(1000):  # 1 MB at a time, slower and slower: killed in the middle
            fh.write(b"x" * 1_000_000)
            if k == 20:
                fh.flush()
                ready.write_text("writing")
            if k >= 20:
                time.sleep(1)
else:
    from napari_unet.core.io.ome_zarr import ZarrOutput
    out = ZarrOutput(target, shape=(2048, 2048), dtype=np.float32, chunks=(256, 256), axes="YX")
    out.array(0)[:] = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    ready.write_text("writing")
    time.sleep(120)
"""


@pytest.fixture(autouse=True)
def _fresh_bookkeeping(monkeypatch):
    monkeypatch.setattr(leftovers, "_reported", set())
    monkeypatch.setattr(leftovers, "_cleaned", {})


def _kill_while_writing(kind: str, target: Path) -> Path:
    """Start a writer of ``target`` in a subprocess, SIGKILL it mid-write; return its leftover."""
    ready = target.parent.parent / f"ready-{kind}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SRC, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _KILLED, kind, str(target), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    (leftover,) = [p for p in target.parent.iterdir() if p.name != target.name]
    assert leftover.name.startswith(f".{target.name}.{child.pid}.") and leftover.name.endswith(".part")
    return leftover


def _make_old(path: Path) -> None:
    """Date ``path`` (and what is in it) back beyond the age at which leftovers are removed."""
    past = time.time() - MIN_AGE_SECONDS - 60
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (past, past))
    os.utime(path, (past, past))


def _written_with_warnings(path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atomic_write_bytes(path, b"new")
    return [str(w.message) for w in caught if issubclass(w.category, LeftoverWarning)]


def test_a_killed_writers_file_is_reported_then_removed_by_the_next_write(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    leftover = _kill_while_writing("file", folder / "big.bin")
    assert leftover.stat().st_size >= 20_000_000

    # just killed: too recent to remove (a writer elsewhere could own it), but said, with its size
    (message,) = _written_with_warnings(folder / "other.bin")
    assert leftover.name in message and "MB" in message and leftover.exists()
    assert _written_with_warnings(folder / "third.bin") == []  # said once, not at every write

    _make_old(leftover)
    leftovers._cleaned.clear()
    (message,) = _written_with_warnings(folder / "fourth.bin")
    assert message.startswith("removed 1 hidden leftover") and leftover.name in message
    assert float(message.split("(")[1].split(" MB")[0]) >= 20.0
    assert sorted(p.name for p in folder.iterdir()) == ["fourth.bin", "other.bin", "third.bin"]


def test_a_killed_writers_zarr_folder_is_removed_by_the_next_zarr_output(tmp_path):
    from napari_unet.core.io.ome_zarr import ZarrOutput

    folder = tmp_path / "out"
    folder.mkdir()
    leftover = _kill_while_writing("zarr", folder / "result.zarr")
    assert leftover.is_dir() and any(leftover.rglob("*"))
    _make_old(leftover)
    with pytest.warns(LeftoverWarning, match=r"removed 1 hidden leftover .*result\.zarr"):
        out = ZarrOutput(folder / "result.zarr", shape=(8, 8), dtype=np.uint8, chunks=(8, 8), axes="YX")
    out.commit()
    assert sorted(p.name for p in folder.iterdir()) == ["result.zarr"]


def test_temporaries_of_running_processes_are_never_touched(tmp_path):
    mine = tmp_path / partial_name("a.tif", "0123abcd")  # this process runs
    mine.write_bytes(b"being written")
    _make_old(mine)
    assert clean_leftovers(tmp_path) == [] and mine.exists()


def test_older_names_and_other_hosts_are_reported_not_removed(tmp_path):
    older = tmp_path / ".a.tif.0123abcd.part"
    other_host = tmp_path / ".b.tif.4242.ffffff.0123abcd.part"
    if leftovers.host_tag() == "ffffff":
        pytest.skip("this host's tag happens to be the one used for another host")
    unrelated = tmp_path / ".config"
    for path in (older, other_host, unrelated):
        path.write_bytes(b"x" * 1000)
        _make_old(path)
    with pytest.warns(LeftoverWarning, match="holds 2 hidden leftovers") as caught:
        found = clean_leftovers(tmp_path)
    assert {f.path.name for f in found} == {older.name, other_host.name}
    assert not any(f.removed for f in found)
    assert older.name in str(caught[0].message) and "delete the others" in str(caught[0].message)
    assert older.exists() and other_host.exists() and unrelated.exists()
