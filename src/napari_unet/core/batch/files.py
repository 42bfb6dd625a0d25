"""Segmenting many TIFF files: the engine of ``napari-unet segment``, for notebooks too.

:func:`segment_files` segments files, folders or glob patterns into an output
folder, skips outputs that already exist, keeps going when one file fails, and
returns one :class:`FileSummary` per input; :func:`write_summary` saves those
rows as CSV or JSON. :func:`segment_files_job` is the same as a generator of
progress reports (the command line draws its progress bars from them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_unet.core.batch.objects import ObjectOptions, object_file_paths, write_object_files
from napari_unet.core.batch.paths import (
    TIFF_SUFFIXES,
    InputError,
    batch_targets,
    expand_inputs,
    output_paths,
    refuse_overwriting_inputs,
)
from napari_unet.core.inference.budget import check_whole_image_file
from napari_unet.core.inference.layout import ImageLayoutError
from napari_unet.core.inference.object_scale import ObjectScale
from napari_unet.core.inference.options import InferenceOptions, inference_options
from napari_unet.core.inference.segmentation import OutputKind, output_kind_of, segment_job
from napari_unet.core.io.atomic import OutputError, atomic_write_bytes
from napari_unet.core.io.tiff import ImageReadError, LabelsDtypeWarning, read_image, write_labels, write_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.registry import load_named_model
from napari_unet.core.progress import Progress, Stage, run_job, within

__all__ = [
    "SUMMARY_FIELDS",
    "TIFF_SUFFIXES",
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

#: Columns of a summary file, in order.
SUMMARY_FIELDS = ("file", "output", "status", "objects", "diameter", "scale", "seconds", "message")
#: Errors that fail one file of a batch but not the batch.
_FILE_ERRORS = (ImageReadError, ImageLayoutError, OutputError, ValueError, RuntimeError, OSError, MemoryError)


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
    diameter : float or None
        The objects' diameter (image pixels) the file was segmented at, when known.
    scale : float or None
        The factor the image was resampled by to give its objects the model's size.
    """

    file: str
    output: str
    status: Literal["ok", "skipped", "failed"]
    objects: int | None
    seconds: float
    message: str = ""
    diameter: float | None = None
    scale: float | None = None


def segment_files_job(
    inputs: Sequence[str | Path],
    /,
    *,
    model: SegmentationModel | str | os.PathLike,
    output_folder: str | Path | None = None,
    outputs: Sequence[str | Path] | None = None,
    output_kind: OutputKind | None = None,
    options: InferenceOptions | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    amp: bool | None = None,
    engine: str | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
    output: OutputKind | None = None,
    objects: ObjectOptions | None = None,
) -> Generator[Progress, None, list[FileSummary]]:
    """Segment TIFF files one by one; a generator form of :func:`segment_files`.

    All files share one engine cache: ``options``' own, or a new one for the batch.

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
    kind = output_kind_of(output_kind, output)
    settings = inference_options(
        options, device=device, tile_size=tile_size, batch_size=batch_size, amp=amp, engine=engine
    ).with_cache()
    if not isinstance(model, SegmentationModel):
        model = load_named_model(model)
    files = expand_inputs(inputs)
    targets = batch_targets(files, output_folder=output_folder, outputs=outputs, kind=kind, fmt="tiff")
    return (
        yield from per_file_job(
            files,
            targets,
            lambda source, target: _segment_one(
                source,
                target,
                model,
                output_kind=kind,
                options=settings,
                channel_axis=channel_axis,
                overwrite=overwrite,
                objects=objects or ObjectOptions(),
            ),
            overwrite=overwrite,
        )
    )


#: One file's result: (objects or None, a message for the summary or "", the object scale used or None).
FileOutcome = tuple[int | None, str, ObjectScale | None]


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
                objects, message, used = yield from within(segment_one(source, target), start=share[0], stop=share[1])
            except _FILE_ERRORS as exc:
                row = FileSummary(
                    str(source), str(target), "failed", None, round(time.perf_counter() - started, 3), str(exc)
                )
            else:
                row = FileSummary(
                    str(source),
                    str(target),
                    "ok",
                    objects,
                    round(time.perf_counter() - started, 3),
                    message,
                    diameter=None if used is None or used.diameter is None else round(used.diameter, 2),
                    scale=None if used is None else round(used.factor, 4),
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
    output_kind: OutputKind | None = None,
    options: InferenceOptions | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    batch_size: int | None = None,
    amp: bool | None = None,
    engine: str | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
    output: OutputKind | None = None,
    objects: ObjectOptions | None = None,
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
    output_kind : {"instances", "classes", "probabilities"}
        What to write: objects (one ID each, default), class per pixel, or
        class probabilities (float32, classes as channels).
    options : InferenceOptions, optional
        Device, tile and batch size, mixed precision, engine (and cache), as
        for :func:`~napari_unet.core.segment`.
    device, tile_size, batch_size, amp, engine
        Shorthand for ``options=InferenceOptions(device=..., ...)``.
    channel_axis : int, optional
        Axis holding channels; defaults to the ``C`` axis found in each file.
    overwrite : bool
        Redo files whose output exists; if False they are skipped.
    output : str, optional
        Deprecated name of ``output_kind``.
    objects : ObjectOptions, optional
        Instances only: link objects across Z planes, and write an ImageJ
        ROI zip and a measurements CSV beside each labels file
        (:class:`~napari_unet.core.batch.objects.ObjectOptions`).
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
        No TIFF files in `inputs`, outputs that do not fit them, two inputs
        whose outputs would be one file (also through upper/lower case alone),
        or an output that is one of the inputs (results never replace the raw
        images).
    OutputError
        An output folder cannot be created or written in (checked with a
        probe file before any work).
    napari_unet.core.ModelFileError
        `model` names no usable model.

    Notes
    -----
    A file that cannot be read, segmented or written is reported as
    ``"failed"`` and the batch goes on; outputs are written atomically.
    Without `overwrite`, an output that another program writes while its
    input is segmented is left as it is and that input is ``"failed"``.

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
            output_kind=output_kind_of(output_kind, output),
            options=inference_options(
                options, device=device, tile_size=tile_size, batch_size=batch_size, amp=amp, engine=engine
            ),
            channel_axis=channel_axis,
            overwrite=overwrite,
            objects=objects,
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
    output_kind: OutputKind,
    options: InferenceOptions,
    channel_axis: int | None,
    overwrite: bool,
    objects: ObjectOptions,
) -> Generator[Progress, None, FileOutcome]:
    """Segment one file into ``target``; returns (objects or None, warning message or "", the scale used).

    Without ``overwrite``, a file that appeared at ``target`` while the image
    was segmented is left as it is (:class:`OutputError`: the file fails).
    """
    check_whole_image_file(source, model.config, output_kind=output_kind, channel_axis=channel_axis)
    taken = [p for p in object_file_paths(target, objects) if p.exists()] if not overwrite else []
    if taken:  # before any work: the labels would be written and these refused
        raise OutputError(f"{taken[0]} exists (overwrite to replace it)")
    image, info = read_image(source)
    if channel_axis is None and not info.rgb and "C" in info.axes:
        channel_axis = info.axes.index("C")
    spatial_axes = "".join(a for a in info.axes if a not in "CS")
    result = yield from segment_job(
        image,
        model,
        output_kind=output_kind,
        options=options,
        channel_axis=channel_axis,
        rgb=info.rgb,
        pixel_size=micrometres_per_pixel(info),
        **objects.segment_keywords(spatial_axes, file=source.name),
    )
    unit = info.unit or "um"
    if result.output == "probabilities":
        write_probabilities(
            target,
            result.probabilities,
            axes=spatial_axes[:-2] + "CYX",
            scale=info.pixel_size,
            unit=unit,
            overwrite=overwrite,
        )
        return None, "", result.object_scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelsDtypeWarning)
        written = write_labels(
            target, result.labels, axes=spatial_axes, scale=info.pixel_size, unit=unit, overwrite=overwrite
        )
    if result.output == "instances" and result.labels is not None:
        intensity = image if channel_axis is None else np.moveaxis(image, channel_axis, -1)
        write_object_files(
            target, result.labels, options=objects, axes=spatial_axes, image=intensity,
            scale=info.pixel_size, unit=unit, overwrite=overwrite,
        )  # fmt: skip
    count = result.n_objects if result.output == "instances" else None
    return count, written.warning or "", result.object_scale


def micrometres_per_pixel(info: Any, /) -> float | None:
    """The X pixel size of an image in micrometres, from its :class:`~napari_unet.core.io.tiff.ImageInfo`; None if unknown."""
    if not info.pixel_size or info.unit != "um":
        return None
    return float(info.pixel_size[-1])


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
    file,output,status,objects,diameter,scale,seconds,message
    a.tif,out/a.tif,ok,12,,,0.5,
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
        raise InputError(f"a summary file must end in .csv or .json, got {path.name!r}")
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=True)
    return path
