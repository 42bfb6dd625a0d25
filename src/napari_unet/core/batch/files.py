"""Segmenting many TIFF files: the engine of ``napari-unet segment``, for notebooks too.

:func:`segment_files` segments files, folders or glob patterns into an output
folder, skips outputs that already exist, keeps going when one file fails, and
returns one :class:`FileSummary` per input; :func:`write_summary` saves those
rows as CSV or JSON. :func:`segment_files_job` is the same as a generator of
progress reports (the command line draws its progress bars from them).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from napari_unet.core.errors import UserError
from napari_unet.core.inference.layout import ImageLayoutError
from napari_unet.core.inference.segmentation import OutputKind, segment_job
from napari_unet.core.io.atomic import OutputError, atomic_write_bytes
from napari_unet.core.io.tiff import ImageReadError, LabelsDtypeWarning, read_image, write_labels, write_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.registry import load_named_model
from napari_unet.core.progress import Progress, Stage, run_job, within

__all__ = [
    "SUMMARY_FIELDS",
    "FileSummary",
    "InputError",
    "expand_inputs",
    "output_paths",
    "per_file_job",
    "refuse_overwriting_inputs",
    "segment_files",
    "segment_files_job",
    "write_summary",
]

TIFF_SUFFIXES = (".tif", ".tiff")
#: Columns of a summary file, in order.
SUMMARY_FIELDS = ("file", "output", "status", "objects", "seconds", "message")
#: Errors that fail one file of a batch but not the batch.
_FILE_ERRORS = (ImageReadError, ImageLayoutError, OutputError, ValueError, RuntimeError, OSError, MemoryError)


class InputError(UserError, ValueError):
    """Inputs or outputs of a batch that cannot be used."""


@dataclass(frozen=True)
class FileSummary:
    """What happened to one input file.

    Attributes
    ----------
    file : str
        The input file.
    output : str
        Its output file.
    status : {"ok", "skipped", "failed"}
        Segmented and written; skipped because the output exists; or failed.
    objects : int or None
        Number of objects found (instance output only).
    seconds : float
        Time spent on the file (reading, segmenting, writing).
    message : str
        Why it was skipped or failed; for "ok", a warning about the file
        written (e.g. labels above 65535), else ``""``.
    """

    file: str
    output: str
    status: Literal["ok", "skipped", "failed"]
    objects: int | None
    seconds: float
    message: str = ""


def expand_inputs(inputs: Sequence[str | Path], /) -> list[Path]:
    """Turn files, folders and glob patterns into a list of TIFF files.

    Folders give their TIFF files (not recursively), sorted by name; patterns
    are expanded with :mod:`glob`, never by a shell. Duplicates are dropped.

    Raises
    ------
    InputError
        An input does not exist, or no TIFF file was found.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            files.extend(p for p in matches if p.is_file())
        else:
            raise InputError(f"no such file or folder: {item}")
    unique = list(dict.fromkeys(files))
    if not unique:
        raise InputError("no TIFF images found in the inputs given")
    return unique


def output_paths(inputs: Sequence[Path], output: str | Path, /) -> list[Path]:
    """Where each input's result goes.

    With one input, `output` may name a file (ending in .tif/.tiff) or a
    folder; with several, it is a folder and each result keeps its input's
    file name (with a ``.tif`` suffix).

    Raises
    ------
    InputError
        Several inputs and a file name, two inputs with the same name, or an
        output that would be one of the input images (an output folder that
        is the input folder, with inputs ending in ``.tif``).
    """
    out = Path(output).expanduser()
    if len(inputs) == 1 and out.suffix.lower() in TIFF_SUFFIXES:
        targets = [out]
    elif out.suffix.lower() in TIFF_SUFFIXES:
        raise InputError(f"{len(inputs)} inputs need an output folder, not the file name {output}")
    else:
        names = [p.name for p in inputs]
        clashes = {n for n in names if names.count(n) > 1}
        if clashes:
            raise InputError(f"several inputs are named {sorted(clashes)[0]}; segment them into separate folders")
        targets = [out / (p.stem + ".tif") for p in inputs]
    refuse_overwriting_inputs(inputs, targets)
    return targets


def refuse_overwriting_inputs(inputs: Sequence[Path], targets: Sequence[Path], /) -> None:
    """Refuse outputs that are input images: writing them would destroy raw data.

    Parameters
    ----------
    inputs : sequence of pathlib.Path
        The input image files.
    targets : sequence of pathlib.Path
        The output files that would be written.

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


def _identity(path: Path) -> str:
    """A path in a form that is equal for equal files (absolute, links and '..' resolved)."""
    return os.path.normcase(str(Path(path).expanduser().resolve()))


def segment_files_job(
    inputs: Sequence[str | Path],
    /,
    *,
    model: SegmentationModel | str | os.PathLike,
    output_folder: str | Path | None = None,
    outputs: Sequence[str | Path] | None = None,
    output: OutputKind = "instances",
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
) -> Generator[Progress, None, list[FileSummary]]:
    """Segment TIFF files one by one; a generator form of :func:`segment_files`.

    Yields
    ------
    Progress
        ``stage="file-start"`` before a file (``data["file"]``: its path),
        the reports of :func:`~napari_unet.core.segment_job` while it runs,
        and ``stage="file-done"`` after it (``data["summary"]``: its
        :class:`FileSummary`). ``plane``/``n_planes`` of the file reports
        count files.

    Returns
    -------
    list of FileSummary
        One row per input, in input order.
    """
    if not isinstance(model, SegmentationModel):
        model = load_named_model(model)
    files = expand_inputs(inputs)
    if outputs is not None:
        targets = [Path(p).expanduser() for p in outputs]
        if len(targets) != len(files):
            raise InputError(f"{len(files)} input files but {len(targets)} output paths")
        refuse_overwriting_inputs(files, targets)
    elif output_folder is not None:
        targets = output_paths(files, Path(output_folder))
    else:
        raise InputError("give output_folder (or one output path per input in outputs)")
    for folder in {t.parent for t in targets}:
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)

    return (
        yield from per_file_job(
            files,
            targets,
            lambda source, target: _segment_one(
                source,
                target,
                model,
                output=output,
                device=device,
                tile_size=tile_size,
                batch_size=batch_size,
                channel_axis=channel_axis,
            ),
            overwrite=overwrite,
        )
    )


#: One file's result: (objects or None, a message for the summary or "").
FileOutcome = tuple[int | None, str]


def per_file_job(
    sources: Sequence[Path],
    targets: Sequence[Path],
    segment_one: Callable[[Path, Path], Generator[Progress, None, FileOutcome]],
    /,
    *,
    overwrite: bool,
) -> Generator[Progress, None, list[FileSummary]]:
    """The batch rules shared by TIFF and OME-Zarr outputs, around one job per file.

    An existing target is skipped unless ``overwrite``; a file whose job
    raises one of the errors a bad file causes (unreadable, wrong layout,
    output not writable, out of memory) is recorded as failed and the batch
    goes on. :attr:`Stage.FILE_START` and :attr:`Stage.FILE_DONE`
    (``data["summary"]``) frame the reports of each file's job, and file ``i``
    of ``n`` runs through the fractions ``[i / n, (i + 1) / n]`` of the batch.

    Returns
    -------
    list of FileSummary
        One row per source, in order.
    """
    rows: list[FileSummary] = []
    n = len(sources)
    for index, (source, target) in enumerate(zip(sources, targets)):
        share = (index / n, (index + 1) / n)  # of the whole batch
        yield Progress(Stage.FILE_START, done=0, total=1, span=share, message=source.name, data={"file": source})
        if target.exists() and not overwrite:
            row = FileSummary(str(source), str(target), "skipped", None, 0.0, f"{target} exists (overwrite to redo it)")
        else:
            started = time.perf_counter()
            try:
                objects, message = yield from within(segment_one(source, target), start=share[0], stop=share[1])
            except _FILE_ERRORS as exc:
                row = FileSummary(
                    str(source), str(target), "failed", None, round(time.perf_counter() - started, 3), str(exc)
                )
            else:
                row = FileSummary(
                    str(source), str(target), "ok", objects, round(time.perf_counter() - started, 3), message
                )
        rows.append(row)
        yield Progress(
            Stage.FILE_DONE,
            done=1,
            total=1,
            span=share,
            message=f"{source.name}: {row.status}",
            data={"summary": row},
        )
    return rows


def segment_files(
    inputs: Sequence[str | Path],
    /,
    *,
    model: SegmentationModel | str | os.PathLike,
    output_folder: str | Path | None = None,
    outputs: Sequence[str | Path] | None = None,
    output: OutputKind = "instances",
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
    summary: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[FileSummary]:
    """Segment TIFF files and write one TIFF result per input, as ``napari-unet segment`` does.

    Parameters
    ----------
    inputs : sequence of path-like
        TIFF files, folders (their TIFF files) or glob patterns.
    model : SegmentationModel, str or path-like
        A model, a shipped model's name or a model file.
    output_folder : path-like, optional
        Folder for the results (created if missing); each keeps its input's
        name. Required unless `outputs` is given.
    outputs : sequence of path-like, optional
        One output path per input file, instead of `output_folder`.
    output : {"instances", "classes", "probabilities"}
        What to write: objects (one ID each), class per pixel, or class
        probabilities (float32, classes as channels).
    device, tile_size, batch_size, channel_axis
        As for :func:`~napari_unet.core.segment`; `channel_axis` defaults to
        the ``C`` axis found in the file.
    overwrite : bool
        Redo files whose output exists; if False they are skipped.
    summary : path-like, optional
        Also write the rows to this ``.csv`` or ``.json`` file
        (see :func:`write_summary`).
    on_progress : callable, optional
        Called with every :class:`~napari_unet.core.Progress` report.

    Returns
    -------
    list of FileSummary
        One row per input file: status ``"ok"``, ``"skipped"`` or
        ``"failed"`` (with the reason), objects found and seconds spent.

    Raises
    ------
    InputError
        No TIFF files in `inputs`, outputs that do not fit them, or an output
        that is one of the inputs (results never replace the raw images).
    napari_unet.core.ModelFileError
        `model` names no usable model.

    Notes
    -----
    A file that cannot be read, segmented or written is reported as
    ``"failed"`` and the batch goes on; outputs are written atomically.

    Examples
    --------
    >>> rows = segment_files(["images/"], model="nuclei", output_folder="labels/")  # doctest: +SKIP
    >>> [(r.file, r.status, r.objects) for r in rows]  # doctest: +SKIP
    [('images/a.tif', 'ok', 41), ('images/b.tif', 'skipped', None)]
    """
    rows = run_job(
        segment_files_job(
            inputs,
            model=model,
            output_folder=output_folder,
            outputs=outputs,
            output=output,
            device=device,
            tile_size=tile_size,
            batch_size=batch_size,
            channel_axis=channel_axis,
            overwrite=overwrite,
        ),
        on_progress=on_progress,
    )
    if summary is not None:
        write_summary(rows, summary)
    return rows


def _segment_one(
    source: Path,
    target: Path,
    model: SegmentationModel,
    *,
    output: OutputKind,
    device: str,
    tile_size: int | None,
    batch_size: int | None,
    channel_axis: int | None,
) -> Generator[Progress, None, tuple[int | None, str]]:
    """Segment one file into ``target``; returns (objects or None, warning message or "")."""
    image, info = read_image(source)
    if channel_axis is None and not info.rgb and "C" in info.axes:
        channel_axis = info.axes.index("C")
    result = yield from segment_job(
        image,
        model,
        output=output,
        device=device,
        tile_size=tile_size,
        batch_size=batch_size,
        channel_axis=channel_axis,
        rgb=info.rgb,
    )
    spatial_axes = "".join(a for a in info.axes if a not in "CS")
    unit = info.unit or "um"
    if result.output == "probabilities":
        write_probabilities(
            target,
            result.probabilities,
            axes=spatial_axes[:-2] + "CYX",
            scale=info.pixel_size,
            unit=unit,
            overwrite=True,
        )
        return None, ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelsDtypeWarning)
        written = write_labels(
            target, result.labels, axes=spatial_axes, scale=info.pixel_size, unit=unit, overwrite=True
        )
    return (result.n_objects if result.output == "instances" else None), written.warning or ""


def write_summary(rows: Sequence[FileSummary], path: str | Path, /) -> Path:
    """Write batch summary rows as CSV or JSON, chosen by the file's suffix.

    Parameters
    ----------
    rows : sequence of FileSummary
        What :func:`segment_files` returned.
    path : path-like
        A ``.csv`` file (columns ``file, output, status, objects, seconds,
        message``; empty ``objects`` when not counted) or a ``.json`` file
        (a list of objects with the same keys). Replaced if it exists.

    Returns
    -------
    pathlib.Path
        The file written (atomically).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "summary.csv"
    >>> _ = write_summary([FileSummary("a.tif", "out/a.tif", "ok", 12, 0.5)], path)
    >>> print(path.read_text().strip())
    file,output,status,objects,seconds,message
    a.tif,out/a.tif,ok,12,0.5,
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    records: list[dict[str, Any]] = [asdict(row) for row in rows]
    if suffix == ".json":
        text = json.dumps(records, indent=2) + "\n"
    elif suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        text = buffer.getvalue()
    else:
        raise ValueError(f"a summary file must end in .csv or .json, got {path.name!r}")
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=True)
    return path
