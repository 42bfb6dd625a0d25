"""Command line: the same core jobs as the napari widgets, for scripts and clusters.

``napari-unet segment INPUT... --model M -o OUT [--summary S]`` segments TIFF files (the
engine is :func:`napari_unet.core.batch.files.segment_files`, which notebooks can call);
``napari-unet train IMAGES... --labels LABELS... [--from M] -o MODEL`` fine-tunes;
``napari-unet models`` lists the shipped models and the user's saved fine-tuned ones;
``napari-unet export-bioimageio MODEL OUT.zip`` writes a bioimage.io package.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_unet.core.batch.files import InputError, expand_inputs, output_paths

__all__ = ["InputError", "expand_inputs", "main", "output_paths"]

#: The batch names this module re-exports, imported on first use: the core (numpy, torch: seconds)
#: is imported inside the commands, within :func:`main`'s handling of Ctrl-C, not with this module.
_REEXPORTED = ("InputError", "expand_inputs", "output_paths")

#: Summary file written into the output folder when --summary is not given.
DEFAULT_SUMMARY = "napari-unet-summary.csv"


def _seed_threshold(text: str) -> float:
    """``--seed-threshold``: a probability strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number between 0 and 1 is needed, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a number between 0 and 1 (exclusive) is needed, got {text}")
    return value


def _add_object_options(seg: argparse.ArgumentParser) -> None:
    """Options on the objects of instance outputs: linking across Z, and files for Fiji."""
    objects = seg.add_argument_group("objects (instance outputs, TIFF)")
    objects.add_argument(
        "--stitch-threshold",
        type=float,
        default=None,
        metavar="IOU",
        help="link objects of neighbouring Z planes that overlap by at least this IoU (e.g. 0.25) into one ID "
        "(default: every plane keeps its own IDs)",
    )
    objects.add_argument(
        "--stitch-axis",
        choices=["Z", "T"],
        default="Z",
        help="the axis --stitch-threshold links along (default: Z; T links the frames of a time-lapse)",
    )
    objects.add_argument(
        "--rois", action="store_true", help="also write NAME_rois.zip: the objects as ImageJ ROI Manager polygons"
    )
    objects.add_argument(
        "--measurements",
        action="store_true",
        help="also write NAME_measurements.csv: area, centroid and mean intensity of every object, "
        "calibrated where the pixel size is known",
    )


def _object_options(args: argparse.Namespace) -> Any:
    """The :class:`~napari_unet.core.batch.objects.ObjectOptions` of the command line, or None."""
    if args.stitch_threshold is None and not args.rois and not args.measurements:
        return None
    from napari_unet.core.batch.objects import ObjectOptions

    return ObjectOptions(args.stitch_threshold, args.stitch_axis, rois=args.rois, measurements=args.measurements)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-unet", description="U-Net segmentation from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment TIFF images with a model")
    seg.add_argument("inputs", nargs="+", metavar="INPUT", help="TIFF files, folders or glob patterns")
    seg.add_argument(
        "-m", "--model", required=True, help="a shipped model's name (see 'napari-unet models') or a model file"
    )
    seg.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    seg.add_argument(
        "--output-kind",
        "--kind",
        dest="kind",
        default="instances",
        choices=["instances", "classes", "probabilities"],
        help="objects with one ID each (default), class per pixel, or class probabilities (float32)",
    )
    seg.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to run (default: auto)"
    )
    seg.add_argument(
        "--tile-size", type=int, default=None, help="largest tile side in pixels (default: from free memory)"
    )
    seg.add_argument("--batch-size", type=int, default=None, help="tiles per network call (default: from free memory)")
    seg.add_argument("--channel-axis", type=int, default=None, help="axis holding channels in multichannel images")
    seg.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "torch", "openvino"],
        help="what runs the network on the CPU: torch (PyTorch), openvino (installed by default on x86-64 Linux "
        "and Windows, same-padding models only), or auto (default): PyTorch first, OpenVINO once this run has "
        "done enough work for the conversion to pay back; NAPARI_UNET_CPU_ENGINE=torch makes auto keep PyTorch",
    )
    seg.add_argument(
        "--float32",
        action="store_true",
        help="compute in float32 everywhere (slower; by default the network runs in bfloat16 on NVIDIA GPUs and on "
        "CPUs with bfloat16 units (AMX, AVX512-BF16); on the val sets that changed which objects were found by at "
        "most 2 of 38 (docs/performance.md)",
    )
    seg.add_argument(
        "--diameter",
        default="auto",
        metavar="auto|PX|model|calibration",
        help="size of the objects: auto (default) estimates it from each image; a number is their diameter in "
        "pixels; model takes them to be the size the model was trained at (no resampling); calibration uses "
        "the file's pixel size and the model's. Images are resampled so their objects have the model's size",
    )
    seg.add_argument(
        "--seed-threshold",
        type=_seed_threshold,
        default=None,
        metavar="P",
        help="objects grow from seeds, the pixels whose interior probability is above P (between 0 and 1); "
        "raise it (e.g. 0.9) when cells come out cut into pieces or two similar cells come out as one; lower it "
        "when a faint or small cell is missing or taken in by a brighter neighbour, for want of a seed (default: the threshold "
        "stored in the model, which Fine-tune and train fit to their annotations; instances only)",
    )
    seg.add_argument("--overwrite", action="store_true", help="replace outputs that already exist (default: skip them)")
    seg.add_argument(
        "--summary",
        default=None,
        metavar="PATH",
        help="write file, objects, seconds and status (ok/skipped/failed) of every input to this "
        f".csv or .json file (default with an output folder: OUTPUT/{DEFAULT_SUMMARY})",
    )
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_object_options(seg)
    large = seg.add_argument_group(
        "large images",
        "images larger than memory are segmented block by block into OME-Zarr: this happens when "
        "the output ends in .zarr, an input is a zarr/OME-Zarr image, or --block-size is given",
    )
    large.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="side of the blocks in pixels; memory grows with its square (default: 2048)",
    )
    large.add_argument(
        "--margin",
        type=int,
        default=128,
        help="pixels predicted around each block so objects cut by block borders are joined; "
        "at least the diameter of the largest object (default: 128)",
    )
    large.add_argument(
        "--scheduler",
        default=None,
        metavar="local|ADDRESS",
        help="run the blocks on dask.distributed: 'local' starts worker processes on this machine, "
        "an address such as tcp://10.0.0.5:8786 uses a running scheduler (default: this process)",
    )
    large.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of --scheduler local (default: one per GPU, else one per two CPU cores)",
    )

    sub.add_parser("models", help="list the shipped models and your saved fine-tuned models")

    bio = sub.add_parser(
        "export-bioimageio", help="write a model as a bioimage.io package for deepImageJ, QuPath, ilastik"
    )
    bio.add_argument("model", metavar="MODEL", help="a shipped model's name, a model file or a bioimage.io package")
    bio.add_argument("package", metavar="OUT.zip", help="the bioimage.io package (.zip) to write")
    bio.add_argument(
        "--sample", default=None, metavar="IMAGE", help="TIFF whose centre becomes the test input and cover"
    )
    bio.add_argument(
        "--author", action="append", default=None, metavar="NAME", help="who made the model (repeat for several)"
    )
    bio.add_argument("--license", default="BSD-3-Clause", help="SPDX licence of the model (default: BSD-3-Clause)")
    bio.add_argument("--overwrite", action="store_true", help="replace an existing package")

    train = sub.add_parser("train", help="fine-tune a model (or train one from scratch) on annotated TIFF images")
    train.add_argument("images", nargs="+", metavar="IMAGE", help="TIFF images, folders or glob patterns")
    train.add_argument(
        "--labels",
        nargs="+",
        required=True,
        metavar="LABELS",
        help="label TIFFs (or a folder) with the same file names as the images",
    )
    train.add_argument(
        "--from",
        dest="start",
        default=None,
        help="model to fine-tune: a shipped model's name or a file (default: a new nuclei-style model)",
    )
    train.add_argument("-o", "--output", required=True, help="where to write the trained model file")
    train.add_argument(
        "--mode",
        choices=["corrections", "scribbles"],
        default="corrections",
        help="labels are full instance/class labels (corrections) or sparse scribbles "
        "(0 = not annotated, 1 = background, k = class k-1)",
    )
    train.add_argument(
        "--val",
        nargs="*",
        default=None,
        metavar="IMAGE",
        help="validation images (labels found by file name in --labels); "
        "default: hold back part of the training annotation",
    )
    train.add_argument(
        "--steps",
        type=int,
        default=500,
        help="most optimiser steps (default: 500); with --minutes, whichever ends training first",
    )
    train.add_argument("--minutes", type=float, default=None, help="stop after this much time")
    train.add_argument(
        "--learning-rate", type=float, default=None, help="default: 1e-3 (the recipe's, fine-tuning and from scratch)"
    )
    train.add_argument("--batch-size", type=int, default=4, help="patches per step (default: 4)")
    train.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="side of the training patches in pixels, at most the largest image side "
        "(default: 128, or the largest image side when smaller)",
    )
    train.add_argument(
        "--optimizer",
        choices=["adamw", "sgd"],
        default="adamw",
        help="AdamW (default) or the paper's SGD with momentum 0.99",
    )
    train.add_argument(
        "--loss",
        choices=["ce", "dice_ce"],
        default="ce",
        help="weighted cross-entropy as in the paper (default) or Dice + cross-entropy",
    )
    train.add_argument("--from-scratch", action="store_true", help="re-initialise the weights")
    train.add_argument(
        "--seed", type=int, default=0, help="seed of patches, augmentation and validation split (default: 0)"
    )
    train.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to train (default: auto)"
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing output model")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


#: Why images that share a name cannot be trained on.
_ONE_LABEL = "the images would all be paired with one label file"


def _labels_for(images: Sequence[Path], label_inputs: Sequence[str]) -> list[Path]:
    """Find each image's label file by name among the --labels inputs.

    Names must tell the files apart: two images, or two label files (from
    two ``--labels`` folders), with one name are refused, as the pairing by
    name would give them all the same labels without a word.
    """
    from napari_unet.core.batch.files import InputError, expand_inputs

    candidates = expand_inputs(label_inputs)
    _refuse_shared_names(images, "images", _ONE_LABEL)
    _refuse_shared_names(candidates, "--labels", "which of them belongs to an image cannot be told")
    by_name = {p.name: p for p in candidates}
    if len(images) == len(candidates) and not all(i.name in by_name for i in images):
        # same count, different names (e.g. t000.tif and man_seg000.tif): pair in order, and show
        # the pairs, since a wrong order would silently train on the wrong labels
        pairs = [f"{i.name} + {c.name}" for i, c in zip(images, candidates)]
        shown = ", ".join(pairs[:5]) + (f" and {len(pairs) - 5} more" if len(pairs) > 5 else "")
        print(
            f"warning: label file names differ from the image names; paired in sorted order: {shown}", file=sys.stderr
        )
        return list(candidates)
    missing = [i.name for i in images if i.name not in by_name]
    if missing:
        raise InputError(f"no labels found for {missing[0]}; label files must have the same names as the images")
    return [by_name[i.name] for i in images]


def _refuse_shared_names(files: Sequence[Path], what: str, why: str) -> None:
    """Refuse files of ``what`` that share a name (``A/a.tif`` and ``B/a.tif``): labels pair by name."""
    from napari_unet.core.batch.files import InputError

    first: dict[str, Path] = {}
    for path in files:
        if path.name in first:
            raise InputError(
                f"{first[path.name]} and {path} ({what}) have the same name, so {why}; give each image and "
                "its label file a name of its own, or train on one folder at a time"
            )
        first[path.name] = path


def _cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``: the widget's fine-tuning job (:func:`.finetune_job.finetune_job`) on TIFF files."""
    from napari_unet.core import ModelFileError, load_named_model, new_model
    from napari_unet.core.batch.files import InputError, expand_inputs
    from napari_unet.core.inference.predict import OutOfMemoryError
    from napari_unet.core.io.tiff import ImageReadError
    from napari_unet.core.progress import run_job
    from napari_unet.core.training.finetune_job import FineTuneRequest, held_back_message, prepare_job, training_job
    from napari_unet.core.training.loop import TrainingSettings
    from napari_unet.core.training.recipe import default_learning_rate

    out = Path(args.output).expanduser()
    refusal = _unwritable_model_path(out, overwrite=args.overwrite)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        model = load_named_model(args.start) if args.start else new_model(name=out.name.split(".")[0])
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from_scratch = args.from_scratch or not args.start
    try:
        settings = TrainingSettings(
            steps=args.steps,
            max_seconds=None if args.minutes is None else args.minutes * 60,
            learning_rate=args.learning_rate or default_learning_rate(from_scratch=from_scratch),
            batch_size=args.batch_size,
            patch_size=args.patch_size or _DEFAULT_PATCH,
            optimizer=args.optimizer,
            loss=args.loss,
            seed=args.seed,
            device=args.device,
        )
        train_files = expand_inputs(args.images)
        val_files = expand_inputs(args.val) if args.val else []
        _refuse_shared_names(
            [*train_files, *(v for v in val_files if v not in train_files)],
            "images, --val" if val_files else "images",
            _ONE_LABEL,
        )
        request = FineTuneRequest(
            model=model,
            images=_annotated_files(train_files, args.labels),
            mode=args.mode,
            settings=settings,
            from_scratch=from_scratch,
            validation=_annotated_files(val_files, args.labels) if val_files else (),
            record={"command": "napari-unet train", "mode": args.mode},
        )
        samples = run_job(prepare_job(request))
    except (InputError, ImageReadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert samples is not None  # nothing sets a stop while the samples are made
    fitted = _fit_patch_size(request, samples.train, given=args.patch_size)
    if isinstance(fitted, str):
        print(f"error: {fitted}", file=sys.stderr)
        return 2
    request, settings = fitted, fitted.settings
    print(f"training on {len(samples.train)} plane(s), validating on {len(samples.validation)}")
    print(held_back_message(samples))
    try:
        result = _run_training(training_job(request, samples), total=settings.steps, quiet=args.quiet)
    except (ValueError, FloatingPointError, OutOfMemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failure = _save_trained(result.model, out, overwrite=args.overwrite)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    print(f"saved {out} after {result.steps_done} steps ({result.seconds:.0f} s)")
    verdict = _validation_verdict(result, out)
    if verdict:
        print(verdict, file=sys.stderr)
    return 0


def _unwritable_model_path(out: Path, *, overwrite: bool) -> str:
    """Why ``train`` could not write its model to ``out`` (checked before training), or ``""``."""
    from napari_unet.core.io.atomic import OutputError, exists_message, probe_writable

    if out.is_dir():
        return f"{out} is a folder; give the model file's name, e.g. {out / 'model.unet.safetensors'}"
    if out.exists() and not overwrite:
        return exists_message(out)
    try:
        probe_writable(out.parent)
    except OutputError as exc:
        return str(exc)
    return ""


def _save_trained(model: Any, out: Path, *, overwrite: bool) -> str:
    """Save the trained model to ``out``; if that fails, keep it elsewhere. The error message, or ``""``.

    A model that cannot be saved where asked (the disk filled up, a file
    appeared at ``out`` meanwhile) is written beside ``out`` with a unique
    name, else into the temporary folder, so the training is never lost.
    """
    import secrets
    import tempfile

    from napari_unet.core import save_model
    from napari_unet.core.io.atomic import OutputError

    try:
        save_model(model, out, overwrite=overwrite)
        return ""
    except OutputError as exc:
        failure = str(exc)
    name = f"{out.name.split('.')[0] or 'model'}.unsaved-{secrets.token_hex(4)}.unet.safetensors"
    for folder in (out.parent, Path(tempfile.gettempdir())):
        try:
            kept = save_model(model, folder / name, overwrite=False)
        except OutputError:
            continue
        return f"{failure}. The trained model was kept as {kept}: move it where you want it (e.g. mv {kept} {out})"
    return f"{failure}. The trained model could not be kept in {out.parent} or {tempfile.gettempdir()} either"


#: Training patch side when --patch-size is not given (capped at the largest image side).
_DEFAULT_PATCH = 128


def _fit_patch_size(request: Any, samples: Sequence[Any], *, given: int | None) -> Any:
    """``request`` with a patch size no larger than the largest training plane, or why ``given`` cannot be used.

    A patch beyond every image is all padding around it: slower, and no better. The default
    shrinks to the largest image side; a ``--patch-size`` beyond it is refused.
    """
    import dataclasses

    largest = max(max(sample.image.shape[:2]) for sample in samples)
    if given is not None:
        if given > largest:
            return (
                f"--patch-size {given} is larger than every training image (the largest side is {largest} "
                f"pixels); give --patch-size {largest} or less"
            )
        return request
    size = min(_DEFAULT_PATCH, largest)
    if size == request.settings.patch_size:
        return request
    print(f"patch size {size} (the largest image side; the default is {_DEFAULT_PATCH})")
    return dataclasses.replace(request, settings=dataclasses.replace(request.settings, patch_size=size))


def _annotated_files(images: Sequence[Path], label_inputs: Sequence[str]) -> list[Any]:
    """Each image file and its label file (found by :func:`_labels_for`) as an ``AnnotatedImage``."""
    import numpy as np

    from napari_unet.core.io.tiff import read_image
    from napari_unet.core.training.finetune_job import AnnotatedImage

    annotated = []
    for image_path, label_path in zip(images, _labels_for(images, label_inputs)):
        image, info = read_image(image_path)
        labels, _ = read_image(label_path)
        channel_axis = info.axes.index("C") if "C" in info.axes and not info.rgb else None
        annotated.append(
            AnnotatedImage(image_path.name, image, np.asarray(labels), channel_axis=channel_axis, rgb=info.rgb)
        )
    return annotated


def _run_training(job, *, total: int, quiet: bool):  # type: ignore[no-untyped-def]
    """Run a training job with a progress bar (loss and best metric); notices are printed as notes."""
    from tqdm import tqdm

    from napari_unet.core.progress import Stage, run_job

    with tqdm(total=total, unit="step", disable=quiet) as bar:

        def update(report, bar=bar):  # type: ignore[no-untyped-def]
            if report.stage == Stage.NOTICE:
                tqdm.write(f"note: {report.message}", file=sys.stderr)
                return
            if report.stage == Stage.PREPARE:
                return  # the held-back region was printed before training
            if report.stage == Stage.CALIBRATE:
                bar.set_postfix_str(report.message)
                if report.done == report.total:
                    tqdm.write(f"note: {report.message}", file=sys.stderr)
                return
            bar.n = report.done
            metric = report.data.get("best")
            bar.set_postfix(
                loss=f"{report.data.get('loss', float('nan')):.3f}",
                **({report.data.get("metric_name") or "metric": f"{metric:.3f}"} if metric is not None else {}),
            )

        return run_job(job, on_progress=update)


def _validation_verdict(result, out: Path) -> str:  # type: ignore[no-untyped-def]
    """Print the verdict on the held-back annotation; return a warning when the user must act.

    When training made the model worse on the held-back annotation, the
    saved file *is* the starting model (see
    :class:`~napari_unet.core.training.verdict.Verdict`), and the user must
    be told so.
    """
    verdict = result.verdict
    if verdict is None or verdict.status == "none":
        print(
            "no validation data (nothing held back: too few objects outside the corrections, or none asked for): "
            "the last model was saved; nothing says whether it does harm elsewhere"
        )
        if verdict is not None and verdict.corrections is not None:
            print(verdict.corrections.sentence())
        return ""
    print(verdict.summary())
    warning = verdict.warning()
    if verdict.kept_previous:
        return f"warning: {warning} {out} holds the starting model unchanged."
    return f"warning: {warning}" if warning else ""


def _cmd_models() -> int:
    from napari_unet.core import shipped_models
    from napari_unet.core.network.user_models import user_models, user_models_folder

    models = shipped_models()
    saved = user_models()
    if not models:
        print("no shipped models are installed")
    width = max((len(m.key) for m in [*models, *saved]), default=0)
    for m in models:
        print(f"{m.key:<{width}}  {m.title}: {m.summary}")
    if saved:
        print(f"\nsaved fine-tuned models (in {user_models_folder()}):")
        for s in saved:
            print(f"{s.key:<{width}}  {s.title}: {s.summary}")
    return 0


def _cmd_export_bioimageio(args: argparse.Namespace) -> int:
    """``export-bioimageio``: :func:`~napari_unet.core.network.bioimageio_export.export_bioimageio`."""
    from napari_unet.core import load_named_model
    from napari_unet.core.io.tiff import read_image
    from napari_unet.core.network.bioimageio_export import export_bioimageio, sample_plane

    out = Path(args.package).expanduser()
    if out.suffix.lower() != ".zip":
        print(f"error: a bioimage.io package is a .zip file; got {out.name}", file=sys.stderr)
        return 2
    model = load_named_model(args.model)
    sample = sample_plane(*read_image(args.sample)) if args.sample else None
    written = export_bioimageio(
        model,
        out,
        sample=sample,
        authors=args.author or ["napari-unet"],
        license=args.license,
        overwrite=args.overwrite,
    )
    print(f"{model.description.name} -> {written} (bioimage.io model package)")
    return 0


def _wants_blocks(args: argparse.Namespace) -> bool:
    """Whether ``segment`` should write OME-Zarr block by block."""
    from napari_unet.core.batch.paths import ZARR_SUFFIXES
    from napari_unet.core.io.ome_zarr import is_lazy_path

    return (
        args.block_size is not None
        or args.scheduler is not None
        or Path(args.output).suffix.lower() in ZARR_SUFFIXES
        or any(is_lazy_path(p) and Path(p).exists() for p in args.inputs)
    )


def _cmd_segment(args: argparse.Namespace, *, zarr: bool) -> int:
    """``segment``: TIFF outputs, or (``zarr``) each input block by block into OME-Zarr; one path for both."""
    from napari_unet.core.batch.paths import TIFF_SUFFIXES, ZARR_SUFFIXES
    from napari_unet.core.progress import run_job

    if zarr and args.block_size is not None and args.block_size < 16:
        print(f"error: --block-size must be at least 16 pixels, got {args.block_size}", file=sys.stderr)
        return 2
    planned = _plan_batch(args, zarr=zarr)
    if isinstance(planned, int):
        return planned
    inputs, targets, options = planned
    suffixes = ZARR_SUFFIXES if zarr else TIFF_SUFFIXES
    to_one = len(targets) == 1 and Path(args.output).suffix.lower() in suffixes
    prepared = _prepare_batch(args, to_one=to_one, first_target=targets[0])
    if isinstance(prepared, int):
        return prepared
    model, summary = prepared
    common = {"model": model, "outputs": targets, "output_kind": args.kind, "options": options}
    common |= {"channel_axis": args.channel_axis, "overwrite": args.overwrite}
    objects = _object_options(args)
    if objects is not None and zarr:
        print(
            "error: --stitch-threshold, --rois and --measurements are for TIFF outputs, not OME-Zarr", file=sys.stderr
        )
        return 2
    if objects is not None:
        common["objects"] = objects
    if zarr:
        from napari_unet.core.batch.zarr_files import segment_files_to_zarr_job

        blocks = {"block_size": args.block_size or 2048, "margin": args.margin}
        cluster = {"scheduler": args.scheduler, "n_workers": args.workers}
        job = segment_files_to_zarr_job(inputs, **common, **blocks, **cluster)
    else:
        from napari_unet.core.batch.files import segment_files_job

        job = segment_files_job(inputs, **common)
    report = _FileBars(unit="block" if zarr else "%", quiet=args.quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            rows = run_job(job, on_progress=report)
    except (ImportError, ConnectionError) as exc:  # no distributed installed, or no scheduler at the address
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # every file's line (a failure with its reason) was printed as it finished: count them, do not repeat them
    return _report_batch(rows, summary)


class _FileBars:
    """Progress of a batch: one bar per file, opened at ``file-start``, its row printed at ``file-done``.

    ``unit="%"`` follows the file's share of the batch's fraction (TIFF outputs);
    ``unit="block"`` counts the blocks written and names the later stages
    (relabelling, pyramid) beside the bar (OME-Zarr outputs). Notices are
    printed above the bar in both.
    """

    def __init__(self, *, unit: str, quiet: bool) -> None:
        self.unit = unit
        self.quiet = quiet
        self.bar: Any = None
        self.share = (0.0, 1.0)  # the current file's part of the batch's fraction

    def __call__(self, progress: Any) -> None:
        from tqdm import tqdm

        from napari_unet.core.progress import Stage

        if progress.stage == Stage.FILE_START:
            self.share = progress.span
            self.bar = tqdm(
                total=100 if self.unit == "%" else 0,
                desc=progress.message,
                unit=self.unit,
                disable=self.quiet,
                leave=False,
            )
        elif progress.stage == Stage.FILE_DONE:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            _print_row(progress.data["summary"])
        elif self.bar is None:
            return
        elif progress.stage == Stage.NOTICE:
            tqdm.write(progress.message)
        elif self.unit == "%":
            start, stop = self.share
            self._show(100, round(100 * (progress.fraction - start) / max(stop - start, 1e-12)))
        elif progress.stage == Stage.BLOCKS:
            self._show(progress.total, progress.done)
        elif progress.stage in (Stage.RELABEL, Stage.PYRAMID) and progress.done == 0:
            self.bar.set_postfix_str(progress.message)

    def _show(self, total: int, done: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()


def _plan_batch(args: argparse.Namespace, *, zarr: bool) -> tuple[list[Path], list[Path], Any] | int:
    """The inputs, their outputs and the inference options of ``segment``, or exit status 2 after printing why.

    One engine cache serves the whole run, so ``--engine auto`` converts a model at most once.
    """
    from napari_unet.core.batch.files import InputError, expand_inputs, output_paths
    from napari_unet.core.inference.engine import EngineCache
    from napari_unet.core.inference.object_scale import DiameterError
    from napari_unet.core.inference.options import InferenceOptions, OptionsError

    try:
        options = InferenceOptions(
            device=args.device,
            tile_size=args.tile_size,
            batch_size=args.batch_size,
            amp=not args.float32,
            engine=args.engine,
            diameter=args.diameter,
            engine_cache=EngineCache(),
        )
        files = expand_inputs(args.inputs, zarr=zarr)
        targets = output_paths(files, args.output, kind=args.kind, fmt="zarr" if zarr else "tiff")
    except (InputError, OptionsError, DiameterError) as exc:
        print(f"error: {_option_names(str(exc))}", file=sys.stderr)
        return 2
    return files, targets, options


def _option_names(message: str) -> str:
    """An options error in the command line's words (``--tile-size``, not ``tile_size``)."""
    for name in ("tile_size", "batch_size"):
        message = message.replace(name, "--" + name.replace("_", "-"))
    return message


def _prepare_batch(args: argparse.Namespace, *, to_one: bool, first_target: Path) -> tuple[Any, Path | None] | int:
    """Check the output folder and the summary path and load the model, before any work.

    Returns
    -------
    (model, summary path or None), or the exit status 2 after printing why.
    """
    from napari_unet.core import ModelFileError, load_named_model
    from napari_unet.core.io.atomic import OutputError, probe_writable

    summary = Path(args.summary).expanduser() if args.summary else None
    if summary is None and not to_one:
        summary = Path(args.output).expanduser() / DEFAULT_SUMMARY
    if summary is not None and summary.suffix.lower() not in (".csv", ".json"):
        print(f"error: --summary must end in .csv or .json, got {summary.name}", file=sys.stderr)
        return 2
    # the output folder of several inputs is made and probed by the batch job, before any work
    folders = [first_target.parent] if to_one else []
    if summary is not None and summary.parent != Path(args.output).expanduser():
        folders.append(summary.parent)
    try:
        for folder in dict.fromkeys(folders):
            probe_writable(folder)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model = load_named_model(args.model)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.seed_threshold is not None:
        try:
            model = model.with_instance_rule(model.description.instance_rule.with_seed_threshold(args.seed_threshold))
        except ValueError as exc:
            print(f"error: --seed-threshold: {exc} (model {model.description.name!r})", file=sys.stderr)
            return 2
    return model, summary


def _report_batch(rows: Sequence[Any], summary: Path | None) -> int:
    """Count the rows (each was printed as it finished), write the summary; the exit status."""
    from napari_unet.core.batch.files import write_summary
    from napari_unet.core.io.atomic import OutputError

    counts = {status: sum(row.status == status for row in rows) for status in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} segmented, {counts['skipped']} skipped, {counts['failed']} failed")
    if summary is not None:
        try:
            write_summary(rows, summary)
        except OutputError as exc:
            print(f"error: the summary could not be written: {exc}", file=sys.stderr)
            return 1
        print(f"summary: {summary}")
    return 1 if counts["failed"] else 0


def _print_row(row) -> None:  # type: ignore[no-untyped-def]
    name = Path(row.file).name
    if row.status == "skipped":
        print(f"skipped {name}: {row.message}")
    elif row.status == "failed":
        print(f"failed {name}: {row.message}", file=sys.stderr)
    else:
        what = f"{row.objects} objects" if row.objects is not None else "written"
        size = ""
        if row.diameter is not None:
            size = f", objects {row.diameter:.0f} px" + (f", resampled x{row.scale:.2f}" if row.scale != 1 else "")
        print(f"{name} -> {row.output} ({what}{size}, {row.seconds:.1f} s)")
        if row.message:
            print(f"warning: {row.message}", file=sys.stderr)


def _plain_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """Format a warning as ``warning: MESSAGE``, without the source file and line.

    Python's default format names the file and line that raised the warning
    and repeats that line of code: noise for someone running a command.
    """
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the command name; default: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 done, 1 some file or the training failed, 2 the
        inputs or options cannot be used (also any
        :class:`~napari_unet.core.errors.UserError` a command let through,
        printed as ``error: MESSAGE``), 130 interrupted, also while the
        core is being imported at start-up.
    """
    previous_format = warnings.formatwarning
    try:
        args = _build_parser().parse_args(argv)
        problem = _option_problem(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        warnings.formatwarning = _plain_warning  # e.g. "warning: CUDA was asked for but ...; running on the CPU"
        _warn_install_conflict()
        status = _run_command(args)
        sys.stdout.flush()  # a reader that went away (napari-unet ... | head) shows here, not at exit
        return status
    except BrokenPipeError:
        # the reader stopped reading: stop quietly, as Unix tools do, without a traceback at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("\ncancelled; outputs written so far are complete, nothing half-written was left", file=sys.stderr)
        return 130
    except Exception as exc:
        errors = sys.modules.get("napari_unet.core.errors")
        if errors is None or not isinstance(exc, errors.UserError):
            raise  # a bug: keep its traceback
        # the last line of defence: a command that did not catch a user-facing error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous_format


def _warn_install_conflict() -> None:
    """Say so when another ``napari-unet`` distribution shares the import package (the command still runs)."""
    from napari_unet._distribution import install_conflict

    conflict = install_conflict()
    if conflict is not None:
        print(f"warning: {conflict}", file=sys.stderr)


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "models":
        return _cmd_models()
    if args.command == "train":
        return _cmd_train(args)
    if args.command == "export-bioimageio":
        return _cmd_export_bioimageio(args)
    if _wants_blocks(args):
        return _cmd_segment(args, zarr=True)
    return _cmd_segment(args, zarr=False)


def __getattr__(name: str) -> Any:
    """The core's names re-exported here (``InputError``, ``expand_inputs``, ...), imported on first use."""
    if name in _REEXPORTED:
        from napari_unet.core.batch import files

        return getattr(files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: A dask scheduler address: an optional scheme, a host and a port (``tcp://10.0.0.5:8786``, ``node7:8786``).
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx|inproc)://)?(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")


def _option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with option values argparse cannot check, before anything is imported or done."""
    if args.command != "segment":
        return None
    if args.scheduler is not None and args.scheduler != "local" and not _ADDRESS.match(args.scheduler):
        return (
            f"--scheduler must be 'local' or the address of a running dask scheduler such as "
            f"tcp://10.0.0.5:8786 (host and port), got {args.scheduler!r}"
        )
    if args.workers is not None and args.workers < 1:
        return f"--workers must be at least 1, got {args.workers}"
    if args.workers is not None and args.scheduler != "local":
        return "--workers sets the size of a local cluster; give it with --scheduler local"
    if args.margin < 0:
        return f"--margin must be 0 or more pixels, got {args.margin}"
    if args.stitch_threshold is not None and not 0 < args.stitch_threshold <= 1:
        return f"--stitch-threshold is an IoU between 0 and 1 (e.g. 0.25), got {args.stitch_threshold}"
    if _object_options(args) is not None and args.kind != "instances":
        return "--stitch-threshold, --rois and --measurements are about objects: use them with --output-kind instances"
    if args.seed_threshold is not None and args.kind != "instances":
        return "--seed-threshold separates objects: use it with --output-kind instances"
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
