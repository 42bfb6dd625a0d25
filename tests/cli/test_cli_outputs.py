"""The command line never replaces, clashes, mispairs or loses an output without a word."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main

OTHER = b"written by someone else"


@pytest.fixture
def images(tmp_path, nuclei_crop):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, nuclei_crop[0])
    return folder


def _segment(source, model, out, *extra):
    return ["segment", str(source), "--model", str(model), "-o", str(out), "--device", "cpu", "--quiet", *extra]


def _train(tmp_path, nuclei_crop, model_file, out, *, labels=None, images=None):
    image, labels_ = nuclei_crop
    for folder in ("img", "lab"):
        (tmp_path / folder).mkdir(exist_ok=True)
    tifffile.imwrite(tmp_path / "img" / "a.tif", image)
    tifffile.imwrite(tmp_path / "lab" / "a.tif", labels_)
    return [
        "train",
        *(images or [str(tmp_path / "img")]),
        "--labels",
        *(labels or [str(tmp_path / "lab")]),
        "--from",
        str(model_file),
        "-o",
        str(out),
        *("--steps 1 --patch-size 32 --batch-size 1 --device cpu --quiet".split()),
    ]


def _write_from_another_thread(path: Path) -> None:
    thread = threading.Thread(target=path.write_bytes, args=(OTHER,))
    thread.start()
    thread.join()


def _no_training(monkeypatch):
    from napari_unet.core.training import finetune_job

    def refuse(*args, **kwargs):
        raise AssertionError("trained although the model could not be saved")

    monkeypatch.setattr(finetune_job, "training_job", refuse)


# 1. outputs that appear while the job runs


def test_segment_keeps_a_tiff_that_appeared_while_the_image_was_segmented(
    tmp_path, images, tiny_model_file, capsys, monkeypatch
):
    from napari_unet.core.batch import files

    out = tmp_path / "out"
    real = files.write_labels

    def collide_then_write(path, *args, **kwargs):
        if Path(path).name == "a.tif":
            _write_from_another_thread(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files, "write_labels", collide_then_write)
    code = main(_segment(images, tiny_model_file, out))

    assert code == 1
    captured = capsys.readouterr()
    assert (out / "a.tif").read_bytes() == OTHER
    assert "failed a.tif:" in captured.err and "already exists and was left as it is" in captured.err
    assert "1 segmented, 0 skipped, 1 failed" in captured.out
    assert tifffile.imread(out / "b.tif").shape == (128, 128)


def test_segment_keeps_a_zarr_folder_that_appeared_and_the_new_result_beside_it(
    tmp_path, images, tiny_model_file, capsys, monkeypatch
):
    from napari_unet.core.io.ome_zarr import ZarrOutput

    out = tmp_path / "out"
    real = ZarrOutput.commit

    def collide_then_commit(self):
        self.path.mkdir()
        _write_from_another_thread(self.path / "precious.bin")
        return real(self)

    monkeypatch.setattr(ZarrOutput, "commit", collide_then_commit)
    code = main(_segment(images / "a.tif", tiny_model_file, out, "--block-size", "64", "--margin", "16"))

    assert code == 1
    err = capsys.readouterr().err
    target = out / "a_labels.zarr"
    assert [p.name for p in target.iterdir()] == ["precious.bin"]
    assert (target / "precious.bin").read_bytes() == OTHER
    kept = next(out.glob("a_labels.unsaved-*.zarr"))
    assert "already exists and was left as it is" in err and f"kept as '{kept}'" in err
    assert (kept / "0").is_dir()


def test_train_keeps_a_model_that_appeared_and_the_trained_model_beside_it(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    import napari_unet.core as core

    out = tmp_path / "trained.unet.safetensors"
    real = core.save_model

    def collide_then_save(model, path, **kwargs):
        if Path(path) == out:
            _write_from_another_thread(out)
        return real(model, path, **kwargs)

    monkeypatch.setattr(core, "save_model", collide_then_save)
    code = main(_train(tmp_path, nuclei_crop, tiny_model_file, out))

    assert code == 1
    err = capsys.readouterr().err
    assert out.read_bytes() == OTHER
    kept = next(tmp_path.glob("trained.unsaved-*.unet.safetensors"))
    assert "already exists and was left as it is" in err and f"The trained model was kept as {kept}" in err
    assert core.load_model(kept).config.depth == core.load_model(tiny_model_file).config.depth


# 5. failures after the work


def test_train_that_cannot_save_keeps_the_model_in_the_temporary_folder(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    import tempfile

    import napari_unet.core as core
    from napari_unet.core.io.atomic import OutputError

    out = tmp_path / "models" / "trained.unet.safetensors"
    out.parent.mkdir()
    real = core.save_model

    def full_disk_there(model, path, **kwargs):
        if Path(path).parent == out.parent:
            raise OutputError(f"the disk is full; nothing was written to {str(path)!r}. Free space and retry")
        return real(model, path, **kwargs)

    monkeypatch.setattr(core, "save_model", full_disk_there)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code = main(_train(tmp_path, nuclei_crop, tiny_model_file, out))

    assert code == 1
    err = capsys.readouterr().err
    kept = next((tmp_path / "tmp").glob("trained.unsaved-*.unet.safetensors"))
    assert "the disk is full" in err and f"The trained model was kept as {kept}" in err
    assert core.load_model(kept).description.name
    assert list(out.parent.iterdir()) == []


def test_train_under_a_regular_file_is_refused_before_training(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    (tmp_path / "notes.txt").write_text("x")
    _no_training(monkeypatch)
    code = main(_train(tmp_path, nuclei_crop, tiny_model_file, tmp_path / "notes.txt" / "m.unet.safetensors"))
    assert code == 2
    assert "notes.txt' is a file, not a folder, so nothing can be written" in capsys.readouterr().err


def test_train_into_an_unwritable_folder_is_refused_before_training(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    from napari_unet.core.io import atomic

    def read_only(folder, name):  # what a read-only folder does (root ignores the mode bits)
        raise OSError(errno.EROFS, "Read-only file system")

    _no_training(monkeypatch)
    monkeypatch.setattr(atomic, "_create_temporary", read_only)
    code = main(_train(tmp_path, nuclei_crop, tiny_model_file, tmp_path / "m.unet.safetensors"))
    assert code == 2
    assert "is on a read-only file system; choose another output folder" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_into_a_read_only_folder_is_refused_before_training(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    _no_training(monkeypatch)
    try:
        assert main(_train(tmp_path, nuclei_crop, tiny_model_file, folder / "m.unet.safetensors")) == 2
    finally:
        folder.chmod(0o755)
    assert "no permission to write in" in capsys.readouterr().err


def test_train_into_a_folder_name_is_refused_before_training(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    _no_training(monkeypatch)
    code = main([*_train(tmp_path, nuclei_crop, tiny_model_file, tmp_path), "--overwrite"])
    assert code == 2
    assert "is a folder; give the model file's name" in capsys.readouterr().err


@pytest.mark.parametrize("zarr", [False, True])
def test_segment_under_a_regular_file_is_refused_before_any_work(tmp_path, images, tiny_model_file, capsys, zarr):
    (tmp_path / "notes.txt").write_text("x")
    extra = ("--block-size", "64") if zarr else ()
    for out in (tmp_path / "notes.txt" / "out", tmp_path / "notes.txt" / ("r.zarr" if zarr else "r.tif")):
        source = images if out.name == "out" else images / "a.tif"
        assert main(_segment(source, tiny_model_file, out, *extra)) == 2
        captured = capsys.readouterr()
        assert "notes.txt' is a file, not a folder" in captured.err
        assert "segmented" not in captured.out
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_segment_summary_into_an_unwritable_place_is_refused_before_any_work(tmp_path, images, tiny_model_file, capsys):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "out"
    code = main(_segment(images, tiny_model_file, out, "--summary", str(tmp_path / "notes.txt" / "s.csv")))
    assert code == 2
    assert "notes.txt' is a file, not a folder" in capsys.readouterr().err
    assert not out.exists()


# 2. output names that clash


@pytest.mark.parametrize("zarr", [False, True])
@pytest.mark.parametrize("overwrite", [False, True])
def test_inputs_differing_only_in_case_are_refused_before_any_work(
    tmp_path, nuclei_crop, tiny_model_file, capsys, zarr, overwrite
):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("A.tif", "a.tif"):
        tifffile.imwrite(folder / name, nuclei_crop[0])
    out = tmp_path / "out"
    extra = [*(["--block-size", "64"] if zarr else []), *(["--overwrite"] if overwrite else [])]
    code = main(_segment(folder, tiny_model_file, out, *extra))
    assert code == 2
    err = capsys.readouterr().err
    assert "A.tif and a.tif would both be written to" in err and "case-insensitive" in err
    assert not out.exists()


def test_one_file_given_twice_is_segmented_once(tmp_path, images, tiny_model_file, capsys):
    out = tmp_path / "out"
    (images / "sub").mkdir()
    code = main(
        ["segment", str(images / "a.tif"), *_segment(images / "sub" / ".." / "a.tif", tiny_model_file, out)[1:]]
    )
    assert code == 0
    assert "1 segmented, 0 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "napari-unet-summary.csv"]


# 3. label files that cannot be told apart


def test_two_label_folders_with_the_same_file_name_are_refused(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    # pinned change: the last folder's a.tif was used for every image named a.tif, without a word
    (tmp_path / "lab2").mkdir()
    tifffile.imwrite(tmp_path / "lab2" / "a.tif", np.zeros((128, 128), np.uint16))
    labels = [str(tmp_path / "lab"), str(tmp_path / "lab2")]
    _no_training(monkeypatch)
    code = main(_train(tmp_path, nuclei_crop, tiny_model_file, tmp_path / "m.unet.safetensors", labels=labels))
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'lab' / 'a.tif'} and {tmp_path / 'lab2' / 'a.tif'} (--labels) have the same name" in err
    assert not (tmp_path / "m.unet.safetensors").exists()


def test_two_images_with_the_same_file_name_are_refused(tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch):
    (tmp_path / "img2").mkdir()
    tifffile.imwrite(tmp_path / "img2" / "a.tif", nuclei_crop[0])
    images = [str(tmp_path / "img"), str(tmp_path / "img2")]
    _no_training(monkeypatch)
    code = main(_train(tmp_path, nuclei_crop, tiny_model_file, tmp_path / "m.unet.safetensors", images=images))
    assert code == 2
    assert "(images) have the same name, so the images would all be paired with one label file" in (
        capsys.readouterr().err
    )


def test_a_validation_image_sharing_a_training_image_name_is_refused(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    (tmp_path / "val").mkdir()
    tifffile.imwrite(tmp_path / "val" / "a.tif", nuclei_crop[0])
    _no_training(monkeypatch)
    args = _train(tmp_path, nuclei_crop, tiny_model_file, tmp_path / "m.unet.safetensors")
    code = main([*args, "--val", str(tmp_path / "val" / "a.tif")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'img' / 'a.tif'} and {tmp_path / 'val' / 'a.tif'} (images, --val) have the same name" in err
