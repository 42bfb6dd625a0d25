"""Fine-tuning the shipped ``cells`` model on PhC-U373 (Cell Tracking Challenge), scored by SEG.

The data set (``../shared/data/ctc_phc_c2dh_u373``, see its README) holds 11
training and 4 val frames of phase-contrast U373 cells, 60-120 px across.
The ``cells`` model (fluorescence, trained on other cells) is fine-tuned on
the training frames with the widget's own job
(:func:`napari_unet.core.training.finetune_job.finetune_job`, corrections
mode, the recipe's defaults) for a budget in optimiser steps, and the val
frames are scored with the challenge's SEG measure (mean Jaccard over the
ground-truth cells, a cell matched by the predicted object covering more
than half of it) and matched-object F1 at IoU 0.5, at checkpoints. At each
checkpoint a copy of the model has its outline threshold fitted to the
training frames first, as the job does when it ends
(:mod:`napari_unet.core.training.calibration`; ``--no-calibration``: not);
that time is not counted as training time.

``--scale`` resamples the frames (images by interpolation, labels by
nearest neighbour) before training and segmenting, and the predictions back
to the original size before scoring, to show what resampling the images to
the model's object size would give.

Usage (repository root)::

    PYTHONPATH=src python benchmarks/phc_u373.py --steps 1500 --checkpoints 500 1000 1500 --scale 0.5
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.transform import rescale, resize

from napari_unet.core import load_named_model, segment
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import Stage, run_job
from napari_unet.core.training.calibration import fitted_copy_job
from napari_unet.core.training.finetune_job import AnnotatedImage, FineTuneRequest, prepare_job, training_job
from napari_unet.core.training.loop import TrainingSettings
from napari_unet.core.training.metrics import match_objects
from napari_unet.core.training.recipe import default_learning_rate
from scoring import SegScore, seg_measure

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctc_phc_c2dh_u373"
Pair = tuple[str, np.ndarray, np.ndarray]


def read_split(folder: Path, /) -> list[Pair]:
    """(name, image, labels) of every frame of a split folder."""
    return [
        (p.stem, tifffile.imread(p), tifffile.imread(folder / "labels" / p.name))
        for p in sorted((folder / "images").glob("*.tif"))
    ]


def scaled(pair: Pair, scale: float, /) -> Pair:
    """The frame resampled by ``scale``: the image interpolated, the labels nearest-neighbour."""
    if scale == 1.0:
        return pair
    name, image, labels = pair
    small = rescale(image.astype(np.float32), scale, order=1, preserve_range=True, anti_aliasing=scale < 1)
    small_labels = rescale(labels, scale, order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype)
    return name, small.astype(np.float32), small_labels


def seg_and_f1(model: SegmentationModel, pairs: list[Pair], /, *, scale: float, device: str) -> tuple[float, float]:
    """Pooled SEG and F1@0.5 on the original frames; predictions at ``scale`` are resized back."""
    seg = SegScore(0.0, 0)
    tp = fp = fn = 0
    for pair in pairs:
        _name, image, labels = pair
        pred = segment(scaled(pair, scale)[1], model, device=device).labels
        if scale != 1.0:
            pred = resize(pred, labels.shape, order=0, preserve_range=True, anti_aliasing=False).astype(pred.dtype)
        seg = seg + seg_measure(labels, pred)
        s = match_objects(labels, pred, threshold=0.5)
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    return seg.score, 2 * tp / max(2 * tp + fp + fn, 1)


def main(argv: list[str] | None = None) -> list[tuple[int, float, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--model", default="cells")
    p.add_argument("--steps", type=int, default=1500, help="fine-tuning budget in optimiser steps")
    p.add_argument("--checkpoints", type=int, nargs="+", default=None, help="steps at which val is scored")
    p.add_argument("--scale", type=float, default=1.0, help="resample the frames by this factor")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--validation-fraction", type=float, default=0.2)
    p.add_argument("--learning-rate", type=float, default=None, help="default: the recipe's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="patches, augmentation")
    p.add_argument("--schedule", choices=["constant", "cosine"], default=None, help="default: the recipe's")
    p.add_argument(
        "--weight-average",
        type=float,
        default=None,
        help="largest decay of the weight average (0: none); default: the recipe's",
    )
    p.add_argument(
        "--augment-zoom",
        type=float,
        default=None,
        help="largest random stretch of a patch axis, 1: none (default: the recipe's)",
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="score checkpoints with the rule as it is (default: fit the outline threshold as the job's end does)",
    )
    args = p.parse_args(argv)

    model = load_named_model(args.model)
    train = [scaled(pair, args.scale) for pair in read_split(args.data / "train")[: args.train_limit]]
    val = read_split(args.data / "val")
    settings = TrainingSettings(
        steps=args.steps,
        device=args.device,
        learning_rate=args.learning_rate or default_learning_rate(from_scratch=False),
        seed=args.seed,
        calibrate_outlines=not args.no_calibration,
        **({"schedule": args.schedule} if args.schedule else {}),
        **({"weight_average": args.weight_average} if args.weight_average is not None else {}),
        **({"augment_zoom": args.augment_zoom} if args.augment_zoom is not None else {}),
    )
    rows = [(0, *seg_and_f1(model, val, scale=args.scale, device=args.device))]
    print(f"PhC-U373: {len(train)} train, {len(val)} val frames; start {args.model}; scale {args.scale}")
    print(f"{'steps':>6} {'train s':>8} {'SEG':>6} {'F1@0.5':>7} {'threshold':>9}")
    start_threshold = model.description.instance_rule.foreground_threshold
    print(f"{0:6d} {0:8.0f} {rows[0][1]:6.3f} {rows[0][2]:7.3f} {start_threshold!s:>9}", flush=True)
    request = FineTuneRequest(
        model=model,
        images=[AnnotatedImage(name, image, labels) for name, image, labels in train],
        settings=settings,
        validation_fraction=args.validation_fraction,
        record={"command": "benchmarks/phc_u373.py"},
    )
    samples = run_job(prepare_job(request))
    pending = sorted(args.checkpoints or [args.steps])
    clock = {"start": time.perf_counter(), "scoring": 0.0}

    def at_step(live: SegmentationModel, step: int) -> None:
        if pending and step >= pending[0]:
            pending.pop(0)
            t0 = time.perf_counter()
            trained = t0 - clock["start"] - clock["scoring"]
            # what the job's end does: fit the outlines to the training objects (on a copy)
            scored = live if args.no_calibration else run_job(fitted_copy_job(live, samples.train, device=args.device))
            seg, f1 = seg_and_f1(scored, val, scale=args.scale, device=args.device)
            clock["scoring"] += time.perf_counter() - t0
            rows.append((step, seg, f1))
            threshold = scored.description.instance_rule.foreground_threshold
            print(f"{step:6d} {trained:8.0f} {seg:6.3f} {f1:7.3f} {threshold!s:>9}", flush=True)

    finished: dict[str, float] = {}

    def note_calibration(report: object) -> None:
        if getattr(report, "stage", None) == Stage.CALIBRATE and "start" not in finished:
            finished["start"] = time.perf_counter()

    result = run_job(
        training_job(request, samples, stop=threading.Event(), preview=at_step), on_progress=note_calibration
    )
    calibrating = time.perf_counter() - finished.get("start", time.perf_counter())
    seg, f1 = seg_and_f1(result.model, val, scale=args.scale, device=args.device)
    print(
        f"result model (after the guard and the job's own calibration, {calibrating:.0f} s, threshold "
        f"{result.model.description.instance_rule.foreground_threshold}): SEG {seg:.3f}, F1 {f1:.3f}; "
        f"{result.verdict.summary() if result.verdict else ''}"
    )
    rows.append((result.steps_done, seg, f1))
    return rows


if __name__ == "__main__":
    main()
