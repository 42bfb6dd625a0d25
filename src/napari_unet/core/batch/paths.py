"""Which files a batch reads and which it writes: one rule for TIFF and OME-Zarr outputs.

- :func:`expand_inputs`: files, folders and glob patterns to a list of images.
  Folders give their images (not recursively); patterns are expanded by
  :func:`glob.glob` with ``recursive=True`` (``**`` descends into folders),
  never by a shell, and keep only images. Images are TIFF files and, for the
  block-by-block path, zarr / OME-Zarr folders; the suffixes come from
  :mod:`napari_unet.core.io.ome_zarr`, the one place that knows them.
- :func:`output_name`: input path + output kind -> the result's file name.
- :func:`output_paths`: where each input's result goes in an output folder
  (or the one output file of a single input); two inputs may not share a
  result, not even through upper/lower case alone (one file on Windows and
  macOS disks).
- :func:`refuse_overwriting_inputs`: no result may replace an input image.

The command line and both batch jobs (:mod:`.files`, :mod:`.zarr_files`) use
these and nothing else.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from napari_unet.core.errors import UserError
from napari_unet.core.io.atomic import probe_writable
from napari_unet.core.io.ome_zarr import TIFF_SUFFIXES, ZARR_SUFFIXES, is_lazy_path

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "InputError",
    "OutputFormat",
    "batch_targets",
    "expand_inputs",
    "image_stem",
    "output_name",
    "output_paths",
    "refuse_overwriting_inputs",
]

OutputFormat = Literal["tiff", "zarr"]
#: Name endings of images, longest first (what :func:`image_stem` removes).
IMAGE_SUFFIXES = tuple(
    sorted({f"{ome}{s}" for s in (*TIFF_SUFFIXES, *ZARR_SUFFIXES) for ome in ("", ".ome")}, key=len, reverse=True)
)
#: Part of a zarr result's name that says what it holds, by output kind.
_KIND_TAGS = {"instances": "labels", "classes": "classes", "probabilities": "probabilities"}
#: The suffix a single output must end in, and the one results get, by format.
_FORMAT_SUFFIXES = {"tiff": (TIFF_SUFFIXES, ".tif"), "zarr": (ZARR_SUFFIXES, ".zarr")}


class InputError(UserError, ValueError):
    """Inputs or outputs of a batch that cannot be used."""


def expand_inputs(inputs: Sequence[str | os.PathLike], /, *, zarr: bool = False) -> list[Path]:
    """Turn files, folders and glob patterns into a list of images.

    Parameters
    ----------
    inputs : sequence of path-like
        Files (taken as they are), folders (their images, sorted by name, not
        recursively) and glob patterns (``recursive=True``: ``**`` matches
        folders at any depth; only images are kept).
    zarr : bool
        Also take zarr and OME-Zarr images (folders), as the block-by-block
        path reads them; else TIFF files only.

    Raises
    ------
    InputError
        An input does not exist, or no image was found.
    """
    images: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if zarr and is_lazy_path(path) and path.exists():
            images.append(path)
        elif path.is_dir():
            images.extend(sorted(p for p in path.iterdir() if _is_image(p, zarr=zarr)))
        elif path.is_file():
            images.append(path)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            images.extend(p for p in matches if _is_image(p, zarr=zarr))
        else:
            raise InputError(f"no such file or folder: {item}")
    by_file: dict[str, Path] = {}
    for image in images:  # a file given twice (also as sub/../a.tif or through a link) is taken once
        by_file.setdefault(_identity(image), image)
    unique = list(by_file.values())
    if not unique:
        what = "TIFF, zarr or OME-Zarr images" if zarr else "TIFF images"
        raise InputError(f"no {what} found in the inputs given")
    return unique


def image_stem(path: str | os.PathLike, /) -> str:
    """An image's name without ``.ome.zarr``, ``.zarr``, ``.ome.tif(f)`` or ``.tif(f)`` (any case).

    Examples
    --------
    >>> image_stem("slides/a.OME.TIF"), image_stem("b.ome.zarr"), image_stem("c.png")
    ('a', 'b', 'c')
    """
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_name(source: str | os.PathLike, /, *, kind: str = "instances", fmt: OutputFormat = "tiff") -> str:
    """The file name of ``source``'s result in an output folder.

    - TIFF results keep the image's name, its last suffix made ``.tif``
      (``a.tiff`` -> ``a.tif``), whatever the kind, so label files pair with
      their images by name (``napari-unet train --labels``).
    - zarr results are ``<stem>_<labels|classes|probabilities>.zarr``, the stem
      being the name without its image suffix (:func:`image_stem`), so a
      result never takes a zarr input's own name.

    Examples
    --------
    >>> output_name("images/a.tiff"), output_name("s/b.ome.zarr", kind="classes", fmt="zarr")
    ('a.tif', 'b_classes.zarr')
    """
    if fmt == "zarr":
        return f"{image_stem(source)}_{_KIND_TAGS.get(kind, kind)}.zarr"
    if fmt == "tiff":
        return Path(source).stem + ".tif"
    raise ValueError(f"fmt must be 'tiff' or 'zarr', got {fmt!r}")


def output_paths(
    inputs: Sequence[Path], output: str | os.PathLike, /, *, kind: str = "instances", fmt: OutputFormat = "tiff"
) -> list[Path]:
    """Where each input's result goes.

    With one input, ``output`` may name the result itself (ending in
    ``.tif``/``.tiff`` for TIFF, ``.zarr`` for zarr); otherwise it is a folder
    and each result is named by :func:`output_name`.

    Raises
    ------
    InputError
        Several inputs and a file name, two inputs whose results would have
        the same path, or a result that would replace an input.
    """
    out = Path(output).expanduser()
    single_suffixes, _ = _FORMAT_SUFFIXES[fmt]
    if out.suffix.lower() in single_suffixes:
        if len(inputs) != 1:
            raise InputError(f"{len(inputs)} inputs need an output folder, not the file name {output}")
        targets = [out]
    else:
        targets = [out / output_name(p, kind=kind, fmt=fmt) for p in inputs]
    _refuse_clashes(inputs, targets)
    refuse_overwriting_inputs(inputs, targets)
    return targets


def batch_targets(
    files: Sequence[Path],
    /,
    *,
    output_folder: str | os.PathLike | None,
    outputs: Sequence[str | os.PathLike] | None,
    kind: str,
    fmt: OutputFormat,
) -> list[Path]:
    """The results of a batch: one given path per input (``outputs``) or named in ``output_folder``.

    The folders they go in are created, and each is probed for writing
    (:func:`~napari_unet.core.io.atomic.probe_writable`) before any work.

    Raises
    ------
    InputError
        Neither or both given, a count that does not match, clashes, or a
        result that would replace an input.
    OutputError
        A folder cannot be created or written in (read-only, under a regular
        file, full disk).
    """
    if outputs is not None and output_folder is not None:
        raise InputError("give output_folder or outputs, not both")
    if outputs is not None:
        targets = [Path(p).expanduser() for p in outputs]
        if len(targets) != len(files):
            raise InputError(f"{len(files)} input files but {len(targets)} output paths")
        _refuse_clashes(files, targets)
        refuse_overwriting_inputs(files, targets)
    elif output_folder is not None:
        targets = output_paths(files, output_folder, kind=kind, fmt=fmt)
    else:
        raise InputError("give output_folder (or one output path per input in outputs)")
    for folder in dict.fromkeys(t.parent for t in targets):
        probe_writable(folder, create=True)
    return targets


def refuse_overwriting_inputs(inputs: Sequence[Path], targets: Sequence[Path], /) -> None:
    """Refuse outputs that are input images: writing them would destroy raw data.

    Parameters
    ----------
    inputs : sequence of pathlib.Path
        The input images (files or zarr folders).
    targets : sequence of pathlib.Path
        The outputs that would be written.

    Raises
    ------
    InputError
        An output path is an input path (the same file after resolving
        ``..`` and links, or the same existing file under another name, as on
        case-insensitive disks). Checked whatever ``overwrite`` says: with
        it the input would be replaced, without it the file would be skipped
        as "done" although it was never segmented.
    """
    sources = {_identity(p): p for p in inputs}
    for target in targets:
        source = sources.get(_identity(target))
        if source is None and target.exists():
            source = next((p for p in inputs if p.exists() and os.path.samefile(p, target)), None)
        if source is not None:
            raise InputError(
                f"the output {target} would replace the input image {source}; write the results to another "
                "folder (e.g. -o labels/ or output_folder='labels/') or give the output file another name"
            )


def _refuse_clashes(inputs: Sequence[Path], targets: Sequence[Path]) -> None:
    """Two inputs may not write the same result, also through case alone.

    ``a.tif`` and ``a.tiff`` both give ``a.tif``; ``a.tif`` and ``A.tif`` give
    names that are one file on the case-insensitive disks of Windows and
    macOS, so they are refused on every system, and a batch behaves the same
    everywhere.
    """
    seen: dict[str, tuple[Path, Path]] = {}
    for source, target in zip(inputs, targets):
        key = _identity(target).casefold()
        if key in seen:
            first, first_target = seen[key]
            names = (first.name, source.name) if first.parent == source.parent else (first, source)
            if first_target == target:
                where = str(target)
            else:
                where = f"{first_target} and {target}, one file on the case-insensitive disks of Windows and macOS"
            raise InputError(
                f"{names[0]} and {names[1]} would both be written to {where}; "
                "segment them into separate folders or rename one of them"
            )
        seen[key] = (source, target)


def _identity(path: Path) -> str:
    """A path in a form that is equal for equal files (absolute, links and '..' resolved)."""
    return os.path.normcase(str(Path(path).expanduser().resolve()))


def _is_image(path: Path, *, zarr: bool) -> bool:
    if path.is_file():
        return path.suffix.lower() in TIFF_SUFFIXES
    return zarr and path.is_dir() and is_lazy_path(path)
