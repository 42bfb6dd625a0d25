"""Few-shot fine-tuning: how fast does a model learn a new dataset from k images?

Starts from a model (the shipped nuclei model by default), fine-tunes it on
k = 1, 3, 5 training images of a dataset in the shared layout, and scores the
dataset's val split (matched-object F1 and AP at IoU 0.5, summed over images)
at several points of the training time. k = 0 is the starting model. Frames
that ``frames.csv`` marks as not fully annotated are not trained on, and are
scored as ``benchmarks/accuracy.py`` scores them (only predicted objects that
touch an annotated one count).

The training is the Fine-tune widget's own job
(:func:`napari_unet.core.training.finetune_job.finetune_job`, run in its
two halves so that the clock starts with the training: corrections
mode, the model's mistakes weighted, the default recipe), so the figures
measure what the widget runs. The val split is scored by the job's preview
hook, in between two steps, with a copy of the model being trained whose
outline threshold is first fitted to the training images, as the job's end
does (:func:`napari_unet.core.training.calibration.fitted_copy_job`). No annotation is
held back for validation unless ``--validation-fraction`` says so.

By default the training stops at the last checkpoint. ``--budget`` runs it
as the widget's time budget does instead (``--schedule cosine`` then decays
to zero at its end) and also scores what the job returns: the best
validated weights when annotation is held back, their outlines fitted.
``--save FOLDER`` also writes that result as a model file, to look at it closely
(per frame, per threshold) without training again.

Usage (repository root)::

    PYTHONPATH=src python benchmarks/few_shot.py --data ../shared/data/ctc_fluo_n2dh_sim_plus \\
        --shots 1 3 5 --checkpoints 30 60 120 --device auto
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import tifffile

from accuracy import partial_frames
from napari_unet.core import load_named_model, save_model, segment
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import run_job
from napari_unet.core.training.calibration import fitted_copy_job
from napari_unet.core.training.finetune_job import AnnotatedImage, FineTuneRequest, prepare_job, training_job
from napari_unet.core.training.loop import TrainingSettings
from napari_unet.core.training.metrics import match_objects
from napari_unet.core.training.recipe import PATCH_SIZE, SCHEDULE, default_learning_rate
from scoring import restrict_to_annotated


def read_pairs(folder: Path, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for path in sorted((folder / "images").glob("*.tif"))[:limit]:
        pairs.append((path.name, tifffile.imread(path), tifffile.imread(folder / "labels" / path.name)))
    return pairs


def sparse_frames(data: Path, /) -> set[str]:
    """Files that label only some of their objects, as ``benchmarks/accuracy.py`` reads them (``frames.csv``)."""
    return {name for name, sparse in partial_frames(data, data).items() if sparse}


def score(model, pairs, device: str, *, sparse: set[str] = frozenset()) -> tuple[float, float]:
    """Pooled F1 and AP at IoU 0.5; on sparse frames only the objects that touch an annotated one count."""
    tp = fp = fn = 0
    for name, image, labels in pairs:
        pred = segment(image, model, device=device, rgb=image.ndim == 3).labels
        if name in sparse:
            pred = restrict_to_annotated(labels, pred)  # as benchmarks/accuracy.py scores them
        s = match_objects(labels, pred, threshold=0.5)
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    ap = tp / max(tp + fp + fn, 1)
    return f1, ap


def few_shot_request(
    pairs: list[tuple[str, np.ndarray, np.ndarray]],
    model: SegmentationModel,
    /,
    *,
    settings: TrainingSettings,
    validation_fraction: float = 0.0,
) -> FineTuneRequest:
    """The Fine-tune request for ``(name, image, labels)`` pairs: what the widget sends for the same layers."""
    images = [AnnotatedImage(name, image, labels, rgb=image.ndim == 3) for name, image, labels in pairs]
    return FineTuneRequest(
        model=model,
        images=images,
        mode="corrections",
        settings=settings,
        validation_fraction=validation_fraction,
        record={"command": "benchmarks/few_shot.py"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with train/ and val/")
    parser.add_argument("--model", default="nuclei", help="starting model: shipped name or file")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument(
        "--checkpoints",
        type=float,
        nargs="+",
        default=[30, 60, 120],
        help="training seconds at which the val split is scored",
    )
    parser.add_argument("--val-limit", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation-fraction", type=float, default=0.0, help="annotation held back, as the widget's option"
    )
    parser.add_argument(
        "--no-resampling",
        action="store_true",
        help="forget the model's object size: train and segment at the images' own scale (as before object sizes)",
    )
    parser.add_argument(
        "--model-diameter",
        type=float,
        default=None,
        help="train (and segment) as if the model's object size were this many pixels: resample the images less",
    )
    parser.add_argument("--schedule", choices=["constant", "cosine"], default=SCHEDULE, help="default: the recipe's")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="end the training after this many seconds (a cosine schedule reaches zero there; the scoring at "
        "checkpoints counts in this clock) and score the job's result; default: stop at the last checkpoint",
    )
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--patch-size", type=int, default=PATCH_SIZE, help="default: the recipe's")
    parser.add_argument(
        "--augment-degradation",
        type=lambda v: v.lower() in ("1", "yes", "true", "on"),
        default=None,
        help="blur and noise augmentation: on/off (default: the recipe's)",
    )
    parser.add_argument(
        "--augment-zoom",
        type=float,
        default=None,
        help="largest random stretch of a patch axis, 1: none (default: the recipe's)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="with --budget: save the job's result for each number of shots as FOLDER/shots_K.unet.safetensors",
    )
    args = parser.parse_args()
    if args.save is not None and args.budget is None:
        parser.error("--save keeps the job's result, so it needs --budget")

    start = load_named_model(args.model)
    if args.no_resampling:
        start.description.object_diameter_px = None
    if args.model_diameter is not None:
        start.description.object_diameter_px = args.model_diameter
    sparse = sparse_frames(args.data)
    # a user annotates every object of the images they correct: frames that label only some cells
    # would teach the others as background (Fluo-C2DL-MSC: 4 of its 12 training frames)
    train_pairs = [pair for pair in read_pairs(args.data / "train") if pair[0] not in sparse]
    val_pairs = read_pairs(args.data / "val", args.val_limit)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train_pairs))
    f1, ap = score(start, val_pairs, args.device, sparse=sparse)
    size = start.description.object_diameter_px
    print(
        f"dataset {args.data.name}: {len(train_pairs)} train, {len(val_pairs)} val images; start model {args.model} "
        f"({'no object size: no resampling' if size is None else f'object size {size} px: images resampled to it'})"
    )
    print(f"{'shots':>5} {'train s':>8} {'steps':>6} {'F1@0.5':>7} {'AP@0.5':>7}")
    print(f"{0:5d} {0:8.0f} {0:6d} {f1:7.3f} {ap:7.3f}", flush=True)
    settings = TrainingSettings(
        steps=1_000_000,
        device=args.device,
        seed=args.seed,
        max_seconds=args.budget,
        patch_size=args.patch_size,
        batch_size=4,
        learning_rate=args.learning_rate or default_learning_rate(from_scratch=False),
        schedule=args.schedule,
        **({} if args.augment_degradation is None else {"augment_degradation": args.augment_degradation}),
        **({} if args.augment_zoom is None else {"augment_zoom": args.augment_zoom}),
    )
    for k in args.shots:
        chosen = [train_pairs[i] for i in order[:k]]
        request = few_shot_request(chosen, start, settings=settings, validation_fraction=args.validation_fraction)
        samples = run_job(prepare_job(request))  # the widget's finetune_job, in its two halves
        # one continuous run; the val split is scored with a copy of the live model, its
        # outlines fitted, when the training time (scoring and fitting excluded) passes each checkpoint
        stop = threading.Event()
        pending = sorted(args.checkpoints)
        clock = {"start": time.perf_counter(), "scoring": 0.0}

        def at_step(model, step, k=k, pending=pending, clock=clock, stop=stop, samples=samples):  # type: ignore[no-untyped-def]
            trained = time.perf_counter() - clock["start"] - clock["scoring"]
            if pending and trained >= pending[0]:
                pending.pop(0)
                t0 = time.perf_counter()
                # scored as the job's end would leave it: outlines fitted to the training objects
                fitted = run_job(fitted_copy_job(model, samples.train, device=args.device))
                f1, ap = score(fitted, val_pairs, args.device, sparse=sparse)
                clock["scoring"] += time.perf_counter() - t0
                print(f"{k:5d} {trained:8.0f} {step:6d} {f1:7.3f} {ap:7.3f}", flush=True)
            if not pending and args.budget is None:
                stop.set()

        result = run_job(training_job(request, samples, stop=stop, preview=at_step))
        if args.budget is not None:  # what the user gets: the job's own end (guard, outline fit)
            f1, ap = score(result.model, val_pairs, args.device, sparse=sparse)
            trained = result.seconds - clock["scoring"]  # the loop's clock, the checkpoints' scoring taken out
            print(f"{k:5d} {trained:8.0f} {result.steps_done:6d} {f1:7.3f} {ap:7.3f}  (the job's result)", flush=True)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                save_model(result.model, args.save / f"shots_{k}.unet.safetensors")


if __name__ == "__main__":
    main()
