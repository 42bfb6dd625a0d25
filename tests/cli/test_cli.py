"""The command line runs the same core on TIFF files and folders."""

from __future__ import annotations

import csv
import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import InputError, expand_inputs, main, output_paths


@pytest.fixture
def images(tmp_path, nuclei_crop):
    folder = tmp_path / "in"
    folder.mkdir()
    image, _ = nuclei_crop
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, image)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_segment_one_file_writes_uint16_instances(tmp_path, images, tiny_model_file, capsys):
    out = tmp_path / "labels.tif"
    code = main(
        [
            "segment",
            str(images / "a.tif"),
            "--model",
            str(tiny_model_file),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    labels = tifffile.imread(out)
    assert labels.shape == (128, 128)
    assert labels.dtype in (np.uint8, np.uint16)
    assert "1 segmented, 0 skipped, 0 failed" in capsys.readouterr().out


def test_segment_folder_keeps_names_and_skips_done(tmp_path, images, tiny_model_file, capsys):
    out = tmp_path / "out"
    args = ["segment", str(images), "--model", str(tiny_model_file), "-o", str(out), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "napari-unet-summary.csv"]
    before = (out / "a.tif").read_bytes()
    capsys.readouterr()
    assert main(args) == 0
    assert "0 segmented, 2 skipped" in capsys.readouterr().out
    assert (out / "a.tif").read_bytes() == before
    # the summary describes the latest run: both files skipped, with the reason
    with (out / "napari-unet-summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["file"], r["status"]) for r in rows] == [
        (str(images / "a.tif"), "skipped"),
        (str(images / "b.tif"), "skipped"),
    ]
    assert all("exists" in r["message"] for r in rows)


def test_unreadable_file_is_reported_and_the_rest_done(tmp_path, images, tiny_model_file, capsys):
    (images / "broken.tif").write_bytes(b"this is not a tiff")
    out = tmp_path / "out"
    code = main(["segment", str(images), "--model", str(tiny_model_file), "-o", str(out), "--device", "cpu", "--quiet"])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "napari-unet-summary.csv"]
    captured = capsys.readouterr()
    assert "2 segmented, 0 skipped, 1 failed" in captured.out
    assert "broken.tif" in captured.err


def test_default_summary_csv_has_one_row_per_input_with_status(tmp_path, images, tiny_model_file):
    (images / "broken.tif").write_bytes(b"this is not a tiff")
    out = tmp_path / "out"
    assert main(["segment", str(images), "-m", str(tiny_model_file), "-o", str(out), "--device", "cpu", "--quiet"]) == 1
    with (out / "napari-unet-summary.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["file", "output", "status", "objects", "diameter", "scale", "seconds", "message"]
        rows = {Path(r["file"]).name: r for r in reader}
    assert sorted(rows) == ["a.tif", "b.tif", "broken.tif"]
    assert rows["broken.tif"]["status"] == "failed" and "not a TIFF" in rows["broken.tif"]["message"]
    assert rows["broken.tif"]["objects"] == ""
    for name in ("a.tif", "b.tif"):
        row = rows[name]
        assert row["status"] == "ok" and row["message"] == ""
        assert row["output"] == str(out / name)
        assert int(row["objects"]) == len(np.unique(tifffile.imread(out / name))) - 1
        assert float(row["seconds"]) >= 0


def test_summary_json_for_one_file_and_none_by_default(tmp_path, images, tiny_model_file):
    out = tmp_path / "one.tif"
    base = ["segment", str(images / "a.tif"), "-m", str(tiny_model_file), "-o", str(out), "--device", "cpu", "--quiet"]
    assert main(base) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".json")) == []
    summary = tmp_path / "report" / "summary.json"
    summary.parent.mkdir()
    assert main([*base, "--summary", str(summary)]) == 0  # the output exists now: skipped
    rows = json.loads(summary.read_text())
    assert rows == [
        {
            "file": str(images / "a.tif"),
            "output": str(out),
            "status": "skipped",
            "objects": None,
            "seconds": 0.0,
            "message": f"{out} exists (overwrite to redo it)",
            "diameter": None,
            "scale": None,
        }
    ]


def test_summary_with_another_suffix_is_refused_before_segmenting(tmp_path, images, tiny_model_file, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(images),
            "-m",
            str(tiny_model_file),
            "-o",
            str(out),
            "--summary",
            str(tmp_path / "s.txt"),
            "--quiet",
        ]
    )
    assert code == 2
    assert ".csv or .json" in capsys.readouterr().err
    assert not out.exists()


def test_classes_and_probabilities_outputs(tmp_path, images, tiny_model_file):
    for kind in ("classes", "probabilities"):
        out = tmp_path / f"{kind}.tif"
        assert (
            main(
                [
                    "segment",
                    str(images / "a.tif"),
                    "-m",
                    str(tiny_model_file),
                    "-o",
                    str(out),
                    "--output-kind",
                    kind,
                    "--device",
                    "cpu",
                    "--quiet",
                ]
            )
            == 0
        )
        data = tifffile.imread(out)
        if kind == "classes":
            assert data.dtype == np.uint8 and data.shape == (128, 128) and data.max() < 3
        else:
            assert data.dtype == np.float32 and data.shape == (3, 128, 128)
            np.testing.assert_allclose(data.sum(axis=0), 1.0, atol=1e-4)


def test_missing_model_is_a_clear_error(tmp_path, images, capsys):
    code = main(
        [
            "segment",
            str(images / "a.tif"),
            "-m",
            str(tmp_path / "nope.unet.safetensors"),
            "-o",
            str(tmp_path / "x.tif"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "no model file" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_expand_inputs_globs_and_errors(images):
    assert [p.name for p in expand_inputs([str(images / "*.tif")])] == ["a.tif", "b.tif"]
    assert [p.name for p in expand_inputs([str(images)])] == ["a.tif", "b.tif"]
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(images / "missing.tif")])


def test_output_paths_need_a_folder_for_several_inputs(tmp_path):
    inputs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(InputError, match="output folder"):
        output_paths(inputs, str(tmp_path / "one.tif"))
    assert output_paths(inputs, str(tmp_path / "o")) == [tmp_path / "o" / "a.tif", tmp_path / "o" / "b.tif"]


def test_console_script_runs_models_listing():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", "models"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert proc.stdout.strip()


def test_train_fine_tunes_and_writes_a_loadable_model(tmp_path, nuclei_crop, tiny_model_file, capsys):
    from napari_unet.core import load_model

    image, labels = nuclei_crop
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", image)
    tifffile.imwrite(tmp_path / "lab" / "a.tif", labels)
    out = tmp_path / "tuned.unet.safetensors"
    code = main(
        [
            "train",
            str(tmp_path / "img"),
            "--labels",
            str(tmp_path / "lab"),
            "--from",
            str(tiny_model_file),
            "-o",
            str(out),
            "--steps",
            "4",
            "--patch-size",
            "32",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    tuned = load_model(out)
    history = tuned.description.training_history[-1]
    assert history["kind"] == "fine-tune" and history["steps"] == 4
    # the untrained model gets all 8 objects of the crop wrong: they are corrections, never held back
    assert history["images"] == ["a.tif"]
    assert "0 of 8 corrected objects are now segmented as painted" in capsys.readouterr().out
    # a second run refuses to overwrite without --overwrite
    assert main(["train", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "-o", str(out), "--quiet"]) == 2


def test_train_reports_missing_labels(tmp_path, nuclei_crop, capsys):
    image, _ = nuclei_crop
    tifffile.imwrite(tmp_path / "a.tif", image)
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "lab" / "other.tif", image)
    tifffile.imwrite(tmp_path / "lab" / "more.tif", image)
    code = main(
        [
            "train",
            str(tmp_path / "a.tif"),
            "--labels",
            str(tmp_path / "lab"),
            "-o",
            str(tmp_path / "m.unet.safetensors"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "no labels found for a.tif" in capsys.readouterr().err


def test_train_pairs_differently_named_labels_in_order_and_says_so(tmp_path, nuclei_crop, tiny_model_file, capsys):
    image, labels = nuclei_crop
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for n in range(2):
        tifffile.imwrite(tmp_path / "img" / f"t00{n}.tif", image)
        tifffile.imwrite(tmp_path / "lab" / f"man_seg00{n}.tif", labels)
    code = main(
        [
            "train",
            str(tmp_path / "img"),
            "--labels",
            str(tmp_path / "lab"),
            "--from",
            str(tiny_model_file),
            "-o",
            str(tmp_path / "m.unet.safetensors"),
            "--steps",
            "1",
            "--patch-size",
            "32",
            "--batch-size",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "paired in sorted order: t000.tif + man_seg000.tif, t001.tif + man_seg001.tif" in err


# --------------------------------------------------------------------------- output faults: nothing is lost


def _segment_args(source, model, out):
    return ["segment", str(source), "--model", str(model), "-o", str(out), "--device", "cpu", "--quiet"]


def _no_space(file, *args, **kwargs):
    """A tifffile.imwrite that gets some bytes out, then finds the disk full."""
    file.write(b"II*\x00" + b"\x00" * 100)
    raise OSError(errno.ENOSPC, "No space left on device")


def test_missing_output_folder_is_refused_before_segmenting(tmp_path, images, tiny_model_file, capsys):
    out = tmp_path / "missing" / "labels.tif"
    assert main(_segment_args(images / "a.tif", tiny_model_file, out)) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.parent.exists()


def test_full_disk_keeps_the_previous_output_and_leaves_no_partial_file(
    tmp_path, images, tiny_model_file, capsys, monkeypatch
):
    out = tmp_path / "labels.tif"
    assert main(_segment_args(images / "a.tif", tiny_model_file, out)) == 0
    before = out.read_bytes()
    capsys.readouterr()

    monkeypatch.setattr(tifffile, "imwrite", _no_space)
    code = main([*_segment_args(images / "a.tif", tiny_model_file, out), "--overwrite"])

    assert code == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and "a.tif" in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "labels.tif", "tiny.unet.safetensors"]


def test_a_real_full_disk_is_reported_as_such_with_the_folder(tmp_path, tiny_model_file, small_disk, capsys):
    source = tmp_path / "big.tif"
    tifffile.imwrite(source, np.random.default_rng(0).random((600, 600)).astype(np.float32))
    out = small_disk / "p.tif"
    code = main([*_segment_args(source, tiny_model_file, out), "--output-kind", "probabilities"])
    assert code != 0
    err = capsys.readouterr().err
    assert "disk is full" in err and str(small_disk) in err and "requested and" not in err
    assert list(small_disk.iterdir()) == []


def test_an_image_too_large_for_memory_fails_at_once_pointing_to_blocks(tmp_path, images, tiny_model_file, capsys):
    import time

    from huge_tiff import huge_compressed_tiff

    huge_compressed_tiff(images / "huge.tif")
    out = tmp_path / "out"
    started = time.perf_counter()
    code = main(_segment_args(images, tiny_model_file, out))
    assert time.perf_counter() - started < 60  # two small images segmented, the huge one refused from its header
    assert code == 1
    captured = capsys.readouterr()
    assert "2 segmented, 0 skipped, 1 failed" in captured.out
    assert "failed huge.tif: segmenting" in captured.err and "300000 x 300000 pixels" in captured.err
    assert "--block-size" in captured.err and "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "napari-unet-summary.csv"]


def test_unwritable_output_folder_is_refused_before_any_work_and_keeps_previous_outputs(
    tmp_path, images, tiny_model_file, capsys, monkeypatch
):
    # pinned change: each file used to be segmented, then failed at the write (exit 1 after all the work)
    from napari_unet.core.batch import files
    from napari_unet.core.io import atomic

    out = tmp_path / "out"
    assert main(_segment_args(images, tiny_model_file, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def read_only(folder, name):  # what a read-only folder does (root ignores the mode bits)
        raise PermissionError(errno.EACCES, "Permission denied")

    def no_work(*args, **kwargs):
        raise AssertionError("segmented although the output folder cannot be written")

    monkeypatch.setattr(atomic, "_create_temporary", read_only)
    monkeypatch.setattr(files, "segment_job", no_work)
    code = main([*_segment_args(images, tiny_model_file, out), "--overwrite"])

    assert code == 2
    captured = capsys.readouterr()
    assert f"error: no permission to write in '{out}'; choose another folder" in captured.err
    assert "segmented" not in captured.out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_train_full_disk_keeps_the_previous_model_file(tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch):
    from napari_unet.core.io import atomic

    image, labels = nuclei_crop
    tifffile.imwrite(tmp_path / "a.tif", image)
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "lab" / "a.tif", labels)
    before = tiny_model_file.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    code = main(
        [
            "train",
            str(tmp_path / "a.tif"),
            "--labels",
            str(tmp_path / "lab"),
            "--from",
            str(tiny_model_file),
            "-o",
            str(tiny_model_file),
            "--overwrite",
            "--steps",
            "1",
            "--patch-size",
            "32",
            "--batch-size",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ]
    )

    assert code == 1
    assert "disk is full" in capsys.readouterr().err
    assert tiny_model_file.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_cuda_without_a_gpu_falls_back_to_the_cpu_with_a_notice(tmp_path, images, tiny_model_file, capsys, monkeypatch):
    import torch

    from napari_unet.core.inference.device import DeviceWarning

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "labels.tif"
    args = _segment_args(images / "a.tif", tiny_model_file, out)
    args[args.index("--device") + 1] = "cuda"

    with pytest.warns(DeviceWarning, match="running on the CPU"):  # printed to stderr outside pytest
        assert main(args) == 0
    assert tifffile.imread(out).shape == (128, 128)


# --------------------------------------------------------------------------- outputs never replace inputs


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_folder_that_is_the_input_folder_is_refused_and_inputs_kept(
    tmp_path, images, tiny_model_file, capsys, overwrite
):
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    args = _segment_args(images, tiny_model_file, images) + (["--overwrite"] if overwrite else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "would replace the input image" in err and "another folder" in err
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before


def test_one_input_written_onto_itself_is_refused_also_through_another_spelling(
    tmp_path, images, tiny_model_file, capsys
):
    before = (images / "a.tif").read_bytes()
    other_spelling = images / ".." / images.name / "a.tif"
    assert main([*_segment_args(images / "a.tif", tiny_model_file, other_spelling), "--overwrite"]) == 2
    assert "would replace the input image" in capsys.readouterr().err
    assert (images / "a.tif").read_bytes() == before


def test_output_paths_refuse_an_input_as_output(images):
    with pytest.raises(InputError, match="would replace the input image"):
        output_paths([images / "a.tif", images / "b.tif"], images)
    # a .tiff input in its own folder gets a .tif output: a different file, allowed
    assert output_paths([images / "c.tiff"], images) == [images / "c.tif"]


def test_segment_files_refuses_explicit_outputs_that_are_inputs(images, tiny_model_file):
    from napari_unet.core.batch.files import segment_files

    before = (images / "b.tif").read_bytes()
    with pytest.raises(InputError, match="would replace the input image"):
        segment_files(
            [images / "a.tif", images / "b.tif"],
            model=str(tiny_model_file),
            outputs=[images.parent / "a_out.tif", images / "b.tif"],
            overwrite=True,
            device="cpu",
        )
    assert (images / "b.tif").read_bytes() == before
    assert not (images.parent / "a_out.tif").exists()


def test_a_failed_file_is_reported_once_with_its_reason(tmp_path, images, tiny_model_file, capsys):
    (images / "broken.tif").write_bytes(b"this is not a tiff")
    assert main(_segment_args(images, tiny_model_file, tmp_path / "out")) == 1
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "broken.tif" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("failed broken.tif: ")
    assert "2 segmented, 0 skipped, 1 failed" in captured.out


@pytest.mark.skipif(sys.platform == "darwin", reason="MPS may exist on macOS")
def test_device_fallback_warning_is_one_plain_line_without_source_location(tmp_path, images, tiny_model_file):
    out = tmp_path / "labels.tif"
    args = _segment_args(images / "a.tif", tiny_model_file, out)
    args[args.index("--device") + 1] = "mps"  # never available on Linux or Windows
    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warning_lines = [line for line in proc.stderr.splitlines() if "MPS" in line]
    assert warning_lines == ["warning: MPS was asked for but is not available; running on the CPU"]
    assert ".py:" not in proc.stderr and "DeviceWarning" not in proc.stderr
    assert "resolve_device" not in proc.stderr  # the source line Python's format repeats
    assert out.exists()


def test_plain_warning_format_is_restored_after_the_command(tmp_path, images, tiny_model_file):
    import warnings

    before = warnings.formatwarning
    assert main(_segment_args(images / "a.tif", tiny_model_file, tmp_path / "l.tif")) == 0
    assert warnings.formatwarning is before


def _disks() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 96 image of 36 bright disks on a grid and its instance labels."""
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), np.uint16)
    for n, (cy, cx) in enumerate(((y, x) for y in range(8, 96, 16) for x in range(8, 96, 16)), start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = n
    return ((labels > 0) * 200 + 20).astype(np.uint8), labels


def _train_args(tmp_path, nuclei_crop, model_file, out):
    image, labels = nuclei_crop
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", image)
    tifffile.imwrite(tmp_path / "lab" / "a.tif", labels)
    return [
        "train",
        str(tmp_path / "img"),
        "--labels",
        str(tmp_path / "lab"),
        "--from",
        str(model_file),
        "-o",
        str(out),
        "--steps",
        "3",
        "--patch-size",
        "32",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]


def test_train_says_when_training_made_the_model_worse_and_the_model_is_unchanged(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    from napari_unet.core import load_model
    from napari_unet.core.training import finetune
    from napari_unet.core.training import loop as training

    # the untrained model gets every object wrong, and corrections are never held back: take its
    # prediction as right, so that a band of the crop can be held back
    monkeypatch.setattr(finetune, "object_corrections", lambda truth, previous, annotated: np.zeros_like(annotated))

    scores = iter([training.Score(0.5, 12)] + [training.Score(0.25, 12)] * 10)  # every trained model is worse
    monkeypatch.setattr(training, "score", lambda *args, **kwargs: next(scores))
    out = tmp_path / "tuned.unet.safetensors"
    assert main(_train_args(tmp_path, _disks(), tiny_model_file, out)) == 0
    captured = capsys.readouterr()
    assert "F1@0.5 0.500 → 0.250 at best on 12 held-back objects" in captured.out
    assert "worse on the held-back annotation" in captured.err and "starting model unchanged" in captured.err
    tuned, start = load_model(out), load_model(tiny_model_file)
    for key, value in start.network.state_dict().items():  # what the warning says is true
        assert np.array_equal(tuned.network.state_dict()[key].numpy(), value.numpy()), key


def test_train_names_the_held_back_region_and_is_quiet_when_it_improved(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    from napari_unet.core.training import finetune
    from napari_unet.core.training import loop as training

    # the untrained model gets every object wrong, and corrections are never held back: take its
    # prediction as right, so that a band of the crop can be held back
    monkeypatch.setattr(finetune, "object_corrections", lambda truth, previous, annotated: np.zeros_like(annotated))

    scores = iter(training.Score(v, 12) for v in [0.2, 0.3, 0.4, 0.5, 0.6])
    monkeypatch.setattr(training, "score", lambda *args, **kwargs: next(scores))
    out = tmp_path / "tuned.unet.safetensors"
    assert main(_train_args(tmp_path, _disks(), tiny_model_file, out)) == 0
    captured = capsys.readouterr()
    assert "held back for validation: a.tif rows " in captured.out
    assert "F1@0.5 0.200 → 0.300 on 12 held-back objects" in captured.out
    assert "warning" not in captured.err


def test_train_out_of_memory_even_for_one_patch_is_an_error_message_not_a_traceback(
    tmp_path, nuclei_crop, tiny_model_file, capsys, monkeypatch
):
    import torch

    from napari_unet.core.network.unet import UNet

    real = UNet.forward

    def forward(self, x):  # validation (eval mode) fits; every training step runs out of memory
        if self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x)

    monkeypatch.setattr(UNet, "forward", forward)
    out = tmp_path / "tuned.unet.safetensors"
    assert main(_train_args(tmp_path, nuclei_crop, tiny_model_file, out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "lower the patch size" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_reader_that_stops_reading_gets_no_traceback():
    """``napari-unet models | head -0``: the pipe closes before the output is written."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.Popen(
        [sys.executable, "-m", "napari_unet.cli", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    run.stdout.close()
    with run.stderr:
        err = run.stderr.read().decode()
    assert run.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err, err


# --- train runs the widget's fine-tuning job -------------------------------------------------------


def _few_shot_module():
    """``benchmarks/few_shot.py``, imported from its file (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).parents[2] / "benchmarks" / "few_shot.py"
    spec = importlib.util.spec_from_file_location("few_shot_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_settings():
    """The TrainingSettings that ``_train_args`` asks the command line for."""
    from napari_unet.core.training.loop import TrainingSettings

    return TrainingSettings(steps=3, patch_size=32, batch_size=1, learning_rate=1e-3, seed=0, device="cpu")


def _weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.network.state_dict().items()}


def test_train_the_cli_the_core_job_and_the_few_shot_benchmark_give_identical_weights(
    tmp_path, nuclei_crop, tiny_model_file, monkeypatch
):
    import itertools
    import threading

    from napari_unet.core import load_model, run_job
    from napari_unet.core.training import loop
    from napari_unet.core.training.finetune_job import AnnotatedImage, FineTuneRequest, finetune_job

    # every validation is better than the one before, so each path keeps its last weights
    # (the tiny untrained model scores 0 throughout, which would keep the starting weights)
    scores = itertools.count()
    monkeypatch.setattr(loop, "evaluate", lambda *args, **kwargs: float(next(scores)))
    out = tmp_path / "tuned.unet.safetensors"
    assert main(_train_args(tmp_path, nuclei_crop, tiny_model_file, out)) == 0
    cli = _weights(load_model(out))
    image, labels = nuclei_crop
    # the request the Fine-tune widget sends for one image layer and its labels layer (default options)
    request = FineTuneRequest(
        model=load_model(tiny_model_file),
        images=[AnnotatedImage("a.tif", image, labels.copy())],
        settings=_cli_settings(),
        validation_fraction=0.2,
    )
    core = _weights(run_job(finetune_job(request, stop=threading.Event())).model)
    few_shot = _few_shot_module()
    bench_request = few_shot.few_shot_request(
        [("a.tif", image, labels)], load_model(tiny_model_file), settings=_cli_settings(), validation_fraction=0.2
    )
    bench = _weights(run_job(finetune_job(bench_request, stop=threading.Event())).model)
    start = _weights(load_model(tiny_model_file))
    assert any(not np.array_equal(cli[k], start[k]) for k in cli)  # it trained
    for key in cli:
        np.testing.assert_array_equal(cli[key], core[key], err_msg=key)
        np.testing.assert_array_equal(cli[key], bench[key], err_msg=key)


def test_train_weighs_the_models_mistakes_as_the_widget_does_and_records_it(
    tmp_path, nuclei_crop, tiny_model_file, monkeypatch
):
    from napari_unet.core import load_model
    from napari_unet.core.training import finetune_job as fj

    calls = []
    real = fj.samples_from_arrays
    monkeypatch.setattr(fj, "samples_from_arrays", lambda *a, **k: calls.append(k) or real(*a, **k))
    out = tmp_path / "tuned.unet.safetensors"
    assert main(_train_args(tmp_path, nuclei_crop, tiny_model_file, out)) == 0
    (call,) = calls
    assert call["previous"] is not None and call["mistake_weight"] == 3.0  # before: no previous, never applied
    history = load_model(out).description.training_history[-1]
    assert history["mistake_weight_applied"] is True and history["settings"]["mistake_weight"] == 3.0
    assert history["command"] == "napari-unet train" and history["annotation"] == "corrections"


def test_train_from_scratch_records_that_no_mistake_weight_was_applied(tmp_path, nuclei_crop, tiny_model_file):
    from napari_unet.core import load_model

    out = tmp_path / "fresh.unet.safetensors"
    assert main([*_train_args(tmp_path, nuclei_crop, tiny_model_file, out), "--from-scratch"]) == 0
    history = load_model(out).description.training_history[-1]
    assert history["kind"] == "from scratch"
    assert history["mistake_weight_applied"] is False and history["settings"]["mistake_weight"] == 1.0
    assert history["settings"]["learning_rate"] == 1e-3  # the from-scratch default of the recipe


def test_main_prints_a_user_error_that_escapes_a_command_and_exits_2(monkeypatch, capsys):
    import napari_unet.cli as cli
    from napari_unet.core.errors import UserError

    class Refused(UserError, ValueError):
        pass

    def refusing() -> int:
        raise Refused("the models folder cannot be read; check its permissions")

    monkeypatch.setattr(cli, "_cmd_models", refusing)
    assert main(["models"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: the models folder cannot be read; check its permissions\n"
    assert "Traceback" not in captured.err


def test_main_lets_a_programming_error_through_with_its_traceback(monkeypatch):
    import napari_unet.cli as cli

    def broken() -> int:
        raise TypeError("a bug, not a user mistake")

    monkeypatch.setattr(cli, "_cmd_models", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["models"])


@pytest.fixture
def conversions(monkeypatch):
    """Networks converted for OpenVINO while a test runs (auto as users get it, converting at once)."""
    from napari_unet.core.inference import engine as engine_module

    monkeypatch.setenv(engine_module.ENGINE_VARIABLE, "auto")
    monkeypatch.setattr(engine_module, "CONVERT_AFTER_PIXELS", 0)
    converted: list = []
    real = engine_module._CompiledNetwork

    def counting(net, *args):
        converted.append(net)
        return real(net, *args)

    monkeypatch.setattr(engine_module, "_CompiledNetwork", counting)
    return converted


def test_engine_torch_keeps_pytorch_where_auto_converts(tmp_path, images, tiny_model_file, conversions):
    from napari_unet.core.inference.engine import openvino_available

    args = ["segment", str(images), "--model", str(tiny_model_file), "--device", "cpu", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "torch"), "--engine", "torch"]) == 0
    assert conversions == []
    assert sorted(p.name for p in (tmp_path / "torch").glob("*.tif")) == ["a.tif", "b.tif"]
    assert main([*args, "-o", str(tmp_path / "auto")]) == 0
    # one cache for the run: the model is converted once for both files (when OpenVINO is there)
    assert len(conversions) == (1 if openvino_available() else 0)
    for name in ("a.tif", "b.tif"):
        torch_labels = tifffile.imread(tmp_path / "torch" / name)
        assert np.mean(tifffile.imread(tmp_path / "auto" / name) == torch_labels) > 0.999


def test_engine_torch_also_on_the_block_by_block_path(tmp_path, images, tiny_model_file, conversions):
    out = tmp_path / "a.zarr"
    args = ["segment", str(images / "a.tif"), "--model", str(tiny_model_file), "--device", "cpu", "--quiet"]
    assert main([*args, "-o", str(out), "--block-size", "64", "--engine", "torch"]) == 0
    assert out.is_dir() and conversions == []


def test_bad_engine_and_inference_settings_are_refused_before_work(tmp_path, images, tiny_model_file, capsys):
    args = ["segment", str(images), "--model", str(tiny_model_file), "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--engine", "fast"])
    assert exited.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err
    assert main([*args, "--batch-size", "0"]) == 2
    assert "error: --batch-size must be a whole number of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_segment_diameter_resamples_and_reports_the_size_in_the_summary(tmp_path, nuclei_crop, capsys):
    image, _ = nuclei_crop
    folder = tmp_path / "big"
    folder.mkdir()
    tifffile.imwrite(folder / "big.tif", np.kron(image, np.ones((3, 3), image.dtype)))  # a 3x objective
    out = tmp_path / "out"
    base = ["segment", str(folder), "-m", "nuclei", "-o", str(out), "--device", "cpu", "--quiet"]
    assert main([*base, "--diameter", "60"]) == 0
    assert "objects 60 px, resampled x0.34" in capsys.readouterr().out
    with (out / "napari-unet-summary.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["diameter"]) == 60 and float(row["scale"]) == pytest.approx(20.58 / 60, abs=1e-3)
    for bad in ("0", "-4", "nan", "huge"):
        assert main([*base, "--overwrite", "--diameter", bad]) == 2
        assert "the object diameter must be a positive number of pixels" in capsys.readouterr().err


def test_float32_turns_mixed_precision_off_for_the_run(tmp_path, images, tiny_model_file):
    from napari_unet.cli import _build_parser, _plan_batch

    args = ["segment", str(images), "--model", str(tiny_model_file), "-o", str(tmp_path / "o")]
    _, _, default = _plan_batch(_build_parser().parse_args(args), zarr=False)
    _, _, exact = _plan_batch(_build_parser().parse_args([*args, "--float32"]), zarr=False)
    assert default.amp is True and exact.amp is False
    assert main([*args, "--float32", "--device", "cpu", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.tif")) == ["a.tif", "b.tif"]


def test_segment_seed_threshold_sets_the_seeds_and_refuses_values_outside_0_1(tmp_path, images, capsys):
    from napari_unet.core import load_named_model, segment

    image = tifffile.imread(images / "a.tif")
    model = load_named_model("nuclei")  # seeds above 0.6 in the file: 5 nuclei in this crop
    sure = segment(image, model.with_instance_rule(model.description.instance_rule.with_seed_threshold(0.99)))
    found = {}
    for option in ([], ["--seed-threshold", "0.99"]):
        out = tmp_path / f"labels{len(option)}.tif"
        args = ["segment", str(images / "a.tif"), "--model", "nuclei", "-o", str(out), "--device", "cpu", "--quiet"]
        assert main(args + option) == 0
        found[len(option)] = tifffile.imread(out)
    assert found[0].max() > found[2].max()  # fewer, surer seeds: fewer objects
    assert np.array_equal(found[2] > 0, sure.labels > 0) and found[2].max() == sure.n_objects

    for bad in ("1.5", "0", "many"):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "segment",
                    str(images / "a.tif"),
                    "--model",
                    "nuclei",
                    "-o",
                    str(tmp_path / "x.tif"),
                    "--seed-threshold",
                    bad,
                ]
            )
        assert exit_info.value.code == 2
        assert "--seed-threshold" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()
    args = ["segment", str(images / "a.tif"), "--model", "nuclei", "-o", str(tmp_path / "x.tif"), "--seed-threshold"]
    assert main([*args, "0.9", "--output-kind", "classes"]) == 2
    assert "--seed-threshold separates objects: use it with --output-kind instances" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_segment_seed_threshold_is_refused_for_a_model_without_seeds(tmp_path, images, tiny_model, capsys):
    from dataclasses import replace

    from napari_unet.core import save_model
    from napari_unet.core.network.instances import InstanceRule

    tiny_model.description = replace(tiny_model.description, instance_rule=InstanceRule("components", [1, 2]))
    path = save_model(tiny_model, tmp_path / "components.unet.safetensors")
    code = main(
        [
            "segment",
            str(images / "a.tif"),
            "--model",
            str(path),
            "-o",
            str(tmp_path / "x.tif"),
            "--seed-threshold",
            "0.9",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--seed-threshold" in err and "not grown from seeds" in err
    assert not (tmp_path / "x.tif").exists()
