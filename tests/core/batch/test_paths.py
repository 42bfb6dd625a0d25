"""One input expansion, one naming rule, one overwrite guard for TIFF and OME-Zarr batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.core.batch import files
from napari_unet.core.batch.paths import (
    InputError,
    batch_targets,
    expand_inputs,
    image_stem,
    output_name,
    output_paths,
    refuse_overwriting_inputs,
)
from napari_unet.core.batch.zarr_files import expand_large_inputs, zarr_output_paths
from napari_unet.core.io import ome_zarr


@pytest.fixture
def tree(tmp_path) -> Path:
    """a.tif, b.TIFF, notes.txt, c.zarr, sub/d.tif, sub/e.ome.zarr."""
    image = np.zeros((8, 8), np.uint8)
    (tmp_path / "sub").mkdir()
    for name in ("a.tif", "b.TIFF", "sub/d.tif"):
        tifffile.imwrite(tmp_path / name, image)
    (tmp_path / "notes.txt").write_text("not an image")
    for name in ("c.zarr", "sub/e.ome.zarr"):
        zarr.create_array(str(tmp_path / name), shape=image.shape, chunks=(8, 8), dtype=image.dtype)
    return tmp_path


def _names(paths) -> list[str]:
    return [p.name for p in paths]


def test_the_suffixes_are_known_in_one_place():
    assert files.TIFF_SUFFIXES is ome_zarr.TIFF_SUFFIXES


def test_folders_give_their_images_not_recursively(tree):
    assert _names(expand_inputs([tree])) == ["a.tif", "b.TIFF"]
    assert _names(expand_inputs([tree], zarr=True)) == ["a.tif", "b.TIFF", "c.zarr"]


def test_patterns_are_recursive_and_keep_only_images_for_both_outputs(tree):
    # pinned: zarr inputs used non-recursive globbing; TIFF patterns kept notes.txt (failing it later)
    pattern = str(tree / "**" / "*")
    assert _names(expand_inputs([pattern])) == ["a.tif", "b.TIFF", "d.tif"]
    assert _names(expand_large_inputs([pattern])) == ["a.tif", "b.TIFF", "c.zarr", "d.tif", "e.ome.zarr"]


def test_explicit_inputs_duplicates_and_errors(tree):
    assert _names(expand_inputs([tree / "notes.txt", tree / "a.tif", str(tree / "a.tif")])) == ["notes.txt", "a.tif"]
    assert _names(expand_inputs([tree / "c.zarr"], zarr=True)) == ["c.zarr"]
    with pytest.raises(InputError, match="no such file or folder"):
        expand_inputs([tree / "missing.tif"])
    with pytest.raises(InputError, match="no TIFF images found"):
        expand_inputs([tree / "c.zarr"])
    with pytest.raises(InputError, match="no TIFF, zarr or OME-Zarr images found"):
        expand_inputs([str(tree / "*.txt")], zarr=True)


@pytest.mark.parametrize(
    ("name", "kind", "fmt", "expected"),
    [
        ("x/a.tif", "instances", "tiff", "a.tif"),
        ("x/a.TIFF", "classes", "tiff", "a.tif"),
        ("x/a.ome.tif", "probabilities", "tiff", "a.ome.tif"),
        ("x/a.tif", "instances", "zarr", "a_labels.zarr"),
        ("x/a.ome.tif", "classes", "zarr", "a_classes.zarr"),
        ("x/a.OME.zarr", "probabilities", "zarr", "a_probabilities.zarr"),
    ],
)
def test_one_naming_rule_for_tiff_and_zarr_results(name, kind, fmt, expected):
    assert output_name(name, kind=kind, fmt=fmt) == expected


def test_image_stems():
    assert [image_stem(n) for n in ("a.ome.tiff", "B.Zarr", "c.tar.gz", "d.ome")] == ["a", "B", "c.tar", "d"]


def test_one_input_may_name_its_result_several_need_a_folder(tmp_path):
    one = [tmp_path / "in" / "a.tif"]
    assert output_paths(one, tmp_path / "r.tif") == [tmp_path / "r.tif"]
    assert zarr_output_paths(one, tmp_path / "r.zarr") == [tmp_path / "r.zarr"]
    two = [tmp_path / "in" / "a.tif", tmp_path / "in" / "b.tif"]
    for fmt, name in (("tiff", "r.tif"), ("zarr", "r.zarr")):
        with pytest.raises(InputError, match="2 inputs need an output folder"):
            output_paths(two, tmp_path / name, fmt=fmt)


def test_inputs_whose_results_would_collide_are_refused(tmp_path):
    # pinned: the TIFF batch compared input names only, so a.tif and a.tiff both wrote out/a.tif
    with pytest.raises(InputError, match="a.tif and a.tiff would both be written to"):
        output_paths([tmp_path / "a.tif", tmp_path / "a.tiff"], tmp_path / "out")
    with pytest.raises(InputError, match="would both be written"):
        zarr_output_paths([tmp_path / "x" / "a.tif", tmp_path / "y" / "a.zarr"], tmp_path / "out")
    with pytest.raises(InputError, match="would both be written"):
        batch_targets(
            [tmp_path / "a.tif", tmp_path / "b.tif"],
            output_folder=None,
            outputs=[tmp_path / "o.tif", tmp_path / "o.tif"],
            kind="instances",
            fmt="tiff",
        )


def test_one_overwrite_guard_for_files_and_zarr_folders(tree):
    with pytest.raises(InputError, match="would replace the input image"):
        output_paths([tree / "a.tif"], tree / "sub" / ".." / "a.tif")
    # the same guard for zarr folders: another spelling of an input is refused
    os.symlink(tree / "c.zarr", tree / "link.zarr")
    with pytest.raises(InputError, match="would replace the input image"):
        refuse_overwriting_inputs([tree / "c.zarr"], [tree / "link.zarr"])
    with pytest.raises(InputError, match="would replace the input image"):
        zarr_output_paths([tree / "c.zarr"], tree / "sub" / ".." / "link.zarr")


def test_batch_targets_need_one_way_to_name_the_results(tmp_path):
    sources = [tmp_path / "a.tif"]
    with pytest.raises(InputError, match="give output_folder"):
        batch_targets(sources, output_folder=None, outputs=None, kind="instances", fmt="tiff")
    with pytest.raises(InputError, match="not both"):
        batch_targets(sources, output_folder=tmp_path, outputs=sources, kind="instances", fmt="tiff")
    with pytest.raises(InputError, match="1 input files but 2 output paths"):
        batch_targets(sources, output_folder=None, outputs=["x.tif", "y.tif"], kind="instances", fmt="tiff")
    made = batch_targets(sources, output_folder=tmp_path / "new" / "deep", outputs=None, kind="classes", fmt="zarr")
    assert made == [tmp_path / "new" / "deep" / "a_classes.zarr"] and made[0].parent.is_dir()


@pytest.mark.parametrize("zarr_inputs", [False, True])
def test_expanding_expanded_inputs_changes_nothing(tree, zarr_inputs):
    """The command line expands once and hands the list to a batch job, which may expand it again."""
    found = expand_inputs([tree, str(tree / "sub" / "*")], zarr=zarr_inputs)
    assert expand_inputs(found, zarr=zarr_inputs) == found


@pytest.mark.parametrize("fmt", ["tiff", "zarr"])
def test_inputs_whose_results_differ_only_in_case_are_refused_naming_both(tmp_path, fmt):
    # pinned change: A.tif and a.tif gave out/A.tif and out/a.tif, one file on Windows and macOS disks,
    # so one result was skipped as "exists" (or, with overwrite, listed twice and lost)
    inputs = [tmp_path / "A.tif", tmp_path / "a.tif"]
    with pytest.raises(InputError, match="A.tif and a.tif would both be written to .*one file on the case-insensitive"):
        output_paths(inputs, tmp_path / "out", fmt=fmt)
    with pytest.raises(InputError, match="A.zarr and a.ome.zarr would both be written to .*case-insensitive"):
        output_paths([tmp_path / "A.zarr", tmp_path / "a.ome.zarr"], tmp_path / "out", fmt="zarr")


def test_clashing_inputs_from_different_folders_are_named_with_their_folders(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'x' / 'a.tif'} and {tmp_path / 'y' / 'a.tiff'} would both"):
        output_paths([tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tiff"], tmp_path / "out")


def test_one_file_given_twice_under_two_spellings_is_one_input(tree):
    found = expand_inputs([tree / "a.tif", tree / "sub" / ".." / "a.tif", str(tree / "*.tif")])
    assert found == [tree / "a.tif"]
    os.symlink(tree / "a.tif", tree / "link.tif")
    assert expand_inputs([tree / "a.tif", tree / "link.tif"]) == [tree / "a.tif"]


def test_batch_targets_probe_their_folders_before_any_work(tmp_path):
    from napari_unet.core.io.atomic import OutputError

    (tmp_path / "notes.txt").write_text("x")
    for fmt in ("tiff", "zarr"):
        with pytest.raises(OutputError, match="notes.txt' is a file, not a folder"):
            batch_targets(
                [tmp_path / "a.tif"],
                output_folder=tmp_path / "notes.txt" / "out",
                outputs=None,
                kind="instances",
                fmt=fmt,
            )
    made = batch_targets(
        [tmp_path / "a.tif"], output_folder=tmp_path / "out", outputs=None, kind="instances", fmt="tiff"
    )
    assert [p.name for p in made[0].parent.iterdir()] == []  # the probe file is gone
