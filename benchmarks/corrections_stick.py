"""Corrections stick: after Fine-tune, does the next Segment of the same image come out right?

For each chosen val image of a data set, its ground truth plays the user's
correction of the model's Segment result: the model is fine-tuned on it with
the widget's own job (:func:`napari_unet.core.training.finetune_job.finetune_job`,
corrections mode, the recipe's defaults, 20 % held back as in the widget),
for a budget given in optimiser steps. Then the same image is segmented
again, and the other val images of the same kind (same size) are segmented
with the starting model and with the fine-tuned one:

- **corrected F1**: matched-object F1 at IoU 0.5 on the corrected image,
  before and after (the target: >= 0.90);
- **others AP**: AP at IoU 0.5 (TP / (TP + FP + FN), pooled) on the other
  images, before and after (the target: a loss of at most 0.02);
- the verdict the widget shows, and the corrected objects it counts.

CPU time is shared on the machines where this runs, so budgets are steps;
``--rate`` (steps per second, measured on a quiet run) converts them to
seconds in the output. Options override single parts of the recipe, to
measure alternatives.

Usage (repository root)::

    PYTHONPATH=src python benchmarks/corrections_stick.py --data ../shared/data/dsb2018_nuclei \\
        --shape 520 696 --images 8efed2e62c91 212b858a66f0 4d09672bcf5a --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core import load_named_model, segment
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.progress import run_job
from napari_unet.core.training.finetune_job import AnnotatedImage, FineTuneRequest, finetune_job
from napari_unet.core.training.loop import TrainingResult, TrainingSettings
from napari_unet.core.training.metrics import MatchScores, match_objects
from napari_unet.core.training.recipe import default_learning_rate

Pair = tuple[str, np.ndarray, np.ndarray]


def read_val(folder: Path, /, *, shape: tuple[int, ...] | None = None) -> list[Pair]:
    """The (name, image, labels) pairs of ``folder/val``, only images of ``shape`` when given."""
    pairs = []
    for path in sorted((folder / "val" / "images").glob("*.tif")):
        image = tifffile.imread(path)
        if shape is None or tuple(image.shape) == tuple(shape):
            pairs.append((path.stem, image, tifffile.imread(folder / "val" / "labels" / path.name)))
    return pairs


def pooled(model: SegmentationModel, pairs: list[Pair], /, *, device: str) -> MatchScores:
    """Matched objects at IoU 0.5 over ``pairs``, added up."""
    tp = fp = fn = 0
    for _name, image, labels in pairs:
        s = match_objects(labels, segment(image, model, device=device, rgb=image.ndim == 3).labels, threshold=0.5)
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    return MatchScores(0.5, tp, fp, fn)


def fine_tune_on(
    pair: Pair, model: SegmentationModel, /, *, settings: TrainingSettings, validation_fraction: float
) -> TrainingResult:
    """Fine-tune ``model`` on one image whose ground truth is the correction: the widget's job."""
    name, image, labels = pair
    request = FineTuneRequest(
        model=model,
        images=[AnnotatedImage(name, image, labels, rgb=image.ndim == 3)],
        mode="corrections",
        settings=settings,
        validation_fraction=validation_fraction,
        record={"command": "benchmarks/corrections_stick.py"},
    )
    return run_job(finetune_job(request, stop=threading.Event()))


def stick(
    pair: Pair,
    others: list[Pair],
    model: SegmentationModel,
    /,
    *,
    settings: TrainingSettings,
    validation_fraction: float,
    others_before: MatchScores,
) -> dict[str, Any]:
    """One corrected image: its F1 before and after, the others' AP after, the verdict."""
    name, image, labels = pair
    before = match_objects(labels, segment(image, model, device=settings.device).labels)
    t0 = time.perf_counter()
    result = fine_tune_on(pair, model, settings=settings, validation_fraction=validation_fraction)
    seconds = time.perf_counter() - t0
    after = match_objects(labels, segment(image, result.model, device=settings.device).labels)
    others_after = pooled(result.model, others, device=settings.device)
    return {
        "image": name,
        "f1_before": before.f1,
        "f1_after": after.f1,
        "ap_before": others_before.average_precision,
        "ap_after": others_after.average_precision,
        "steps": result.steps_done,
        "train_s": result.seconds,
        "job_s": seconds,
        "verdict": result.verdict.summary() if result.verdict else "",
        "kept_previous": bool(result.verdict and result.verdict.kept_previous),
    }


def settings_from(args: argparse.Namespace) -> TrainingSettings:
    """The recipe's defaults with the parts the options override."""
    settings = TrainingSettings(
        steps=args.steps, device=args.device, seed=args.seed, learning_rate=default_learning_rate(from_scratch=False)
    )
    overrides = {
        "learning_rate": args.learning_rate,
        "mistake_weight": args.mistake_weight,
        "anchor_weight": args.anchor_weight,
        "correction_fraction": args.correction_fraction,
        "schedule": args.schedule,
        "patch_size": args.patch_size,
        "augment_degradation": args.augment_degradation,
        "augment_zoom": args.augment_zoom,
        "weight_average": args.weight_average,
    }
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="data set folder with val/images and val/labels")
    p.add_argument("--model", default="nuclei", help="starting model: shipped name or file")
    p.add_argument("--shape", type=int, nargs="+", default=None, help="only val images of this shape")
    p.add_argument("--images", nargs="+", default=None, help="name prefixes of the corrected images (default: all)")
    p.add_argument("--others", type=int, default=None, help="score at most this many other images")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning budget in optimiser steps")
    p.add_argument("--rate", type=float, default=None, help="steps per second, to give the budget in seconds")
    p.add_argument("--validation-fraction", type=float, default=0.2)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--mistake-weight", type=float, default=None)
    p.add_argument("--anchor-weight", type=float, default=None)
    p.add_argument("--correction-fraction", type=float, default=None)
    p.add_argument("--schedule", choices=["constant", "cosine"], default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument(
        "--augment-degradation",
        type=lambda v: v.lower() in ("1", "yes", "true", "on"),
        default=None,
        help="blur and noise augmentation: on/off (default: the recipe's)",
    )
    p.add_argument("--augment-zoom", type=float, default=None, help="largest random stretch of a patch axis (1: none)")
    p.add_argument("--weight-average", type=float, default=None, help="largest decay of the weight average (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parser().parse_args(argv)
    model = load_named_model(args.model)
    pairs = read_val(args.data, shape=tuple(args.shape) if args.shape else None)
    chosen = [p for p in pairs if args.images is None or any(p[0].startswith(x) for x in args.images)]
    settings = settings_from(args)
    budget = f"{args.steps} steps" + (
        f" (~{args.steps / args.rate:.0f} s at {args.rate:g} steps/s)" if args.rate else ""
    )
    changed = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in ("steps", "device", "seed") and getattr(settings, f.name) != f.default
    }
    print(f"{args.data.name}: {len(chosen)} corrected image(s), budget {budget}, recipe defaults {changed or ''}")
    print(f"{'image':>14} {'F1 before':>9} {'F1 after':>8} {'AP others':>9} {'after':>6} {'steps/s':>7}  verdict")
    rows = []
    for pair in chosen:
        others = [p for p in pairs if p[0] != pair[0]][: args.others]
        before = pooled(model, others, device=args.device)
        row = stick(
            pair, others, model, settings=settings, validation_fraction=args.validation_fraction, others_before=before
        )
        rows.append(row)
        rate = row["steps"] / max(row["train_s"], 1e-9)
        print(
            f"{row['image'][:14]:>14} {row['f1_before']:9.3f} {row['f1_after']:8.3f} {row['ap_before']:9.3f} "
            f"{row['ap_after']:6.3f} {rate:7.2f}  {'[kept the start model] ' if row['kept_previous'] else ''}"
            f"{row['verdict']}",
            flush=True,
        )
    if rows:
        f1 = np.mean([r["f1_after"] for r in rows])
        loss = np.mean([r["ap_before"] - r["ap_after"] for r in rows])
        print(f"mean corrected F1 after {f1:.3f}; mean AP loss on the others {loss:+.3f}")
    return rows


if __name__ == "__main__":
    main()
