"""Accuracy of a model on an annotated data set: AP/F1 and SEG, class IoU, or EM Rand error.

The data set is a folder in the shared layout, ``<data>/<split>/{images,labels}/*.tif``
(labels share the image's file name), or, without ``--split``, a folder that directly
holds ``images/`` and ``labels/``. What is scored depends on ``--kind``:

instances
    Instance labels (uint16, 0 = background). AP = TP / (TP + FP + FN) and F1 at IoU
    thresholds 0.5 ... 0.9, with TP/FP/FN summed over all images before dividing (as
    StarDist's ``matching_dataset``), and the Cell Tracking Challenge SEG (mean IoU of
    every ground-truth object with the predicted object covering more than half of it).
    Frames flagged ``fully_annotated = False`` in a CSV next to the data (the CTC sets'
    ``frames.csv``) are sparse: there, predicted objects that touch no annotated object
    are dropped before matching (``--sparse`` overrides). SEG needs no such care.
semantic
    Class labels whose values are the model's class indices. IoU per class and pixel
    error, both pooled over all pixels of all images.
em
    Binary labels, 1 = cell interior, 0 = membrane (ISBI 2012). The ISBI 2012 foreground-
    restricted Rand error of the model's instances (connected components of the predicted
    interiors) against the 4-connected components of the true interiors (mean over images),
    plus pixel error and IoU of the interior/membrane masks (pooled).
auto (default)
    ``instances`` for 16/32-bit labels; ``em`` for 0/1 labels when the model separates
    objects; ``semantic`` otherwise.

RGB images (H, W, 3|4) are passed with ``rgb=True``; ``--only-gray`` skips them.

``--blur S`` and ``--noise F`` score degraded copies, as a user's next experiment may
look: a Gaussian blur of S pixels (out of focus), then Gaussian noise of F times the
image's standard deviation (seeded per image; lower signal-to-noise). Lowering the contrast
alone changes nothing for models that normalise each image by its percentiles.

Usage (repository root)::

    PYTHONPATH=src python benchmarks/accuracy.py --model nuclei --data ../shared/data/dsb2018_nuclei --split val
    PYTHONPATH=src python benchmarks/accuracy.py --model my.unet.safetensors --data ../shared/data/isbi2012_em \\
        --split val --kind em --json em.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.core import load_named_model, segment
from napari_unet.core.training.metrics import MatchScores
from scoring import (
    AP_THRESHOLDS,
    SegScore,
    average_precision_table,
    pool_match_scores,
    rand_scores,
    restrict_to_annotated,
    seg_measure,
)

TABLE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
KINDS = ("auto", "instances", "semantic", "em")


@dataclass
class Sample:
    name: str
    image: Path
    labels: Path
    sparse: bool = False


def find_samples(data: Path, split: str | None) -> tuple[Path, list[Sample]]:
    """Image/label pairs of a data folder, sorted by file name."""
    root = data / split if split else data
    images, labels = root / "images", root / "labels"
    if not images.is_dir() or not labels.is_dir():
        hint = ""
        if not split:
            subs = (
                sorted(p.name for p in data.iterdir() if (p / "images").is_dir() and (p / "labels").is_dir())
                if data.is_dir()
                else []
            )
            hint = f"; choose one with --split ({', '.join(subs)})" if subs else ""
        raise SystemExit(f"{root} holds no images/ and labels/ folders{hint}")
    samples = []
    for image in sorted(images.glob("*.tif*")):
        label = labels / image.name
        if not label.is_file():
            raise SystemExit(f"no labels for {image.name} in {labels}")
        samples.append(Sample(image.stem, image, label))
    if not samples:
        raise SystemExit(f"no .tif images in {images}")
    return root, samples


def partial_frames(data: Path, root: Path) -> dict[str, bool]:
    """File name -> sparse, from any CSV next to the data with ``file`` and ``fully_annotated`` columns."""
    flags: dict[str, bool] = {}
    for folder in {data, root, root.parent}:
        for path in sorted(folder.glob("*.csv")):
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or not {"file", "fully_annotated"} <= set(reader.fieldnames):
                    continue
                for row in reader:
                    flags[row["file"]] = row["fully_annotated"].strip().lower() not in ("true", "1", "yes")
    return flags


def choose_kind(kind: str, labels: np.ndarray, model: Any) -> str:
    if kind != "auto":
        return kind
    if labels.dtype.itemsize >= 2:
        return "instances"
    binary = set(np.unique(labels).tolist()) <= {0, 1}
    return "em" if binary and model.description.instance_rule.method != "none" else "semantic"


def degraded(image: np.ndarray, *, blur: float, noise: float, seed: int) -> np.ndarray:
    """The image blurred by ``blur`` px and with Gaussian noise of ``noise`` image std (unchanged for 0 and 0)."""
    if not blur and not noise:
        return image
    out = image.astype(np.float32)
    if blur:
        sigma = (blur, blur, 0) if is_rgb(out) else blur
        out = ndi.gaussian_filter(out, sigma)
    if noise:
        out += np.random.default_rng(seed).normal(0.0, noise * float(out.std()), out.shape).astype(np.float32)
    return out


def is_rgb(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] in (3, 4)


@dataclass
class Totals:
    """Running sums over the images."""

    tables: list[list[MatchScores]] = field(default_factory=list)
    seg: SegScore = field(default_factory=lambda: SegScore(0.0, 0))
    n_truth: int = 0
    n_pred: int = 0
    confusion: np.ndarray | None = None
    rand: list[tuple[float, float, float]] = field(default_factory=list)  # (error, precision, recall)
    n_sparse: int = 0
    device: str = ""
    per_image: list[dict[str, Any]] = field(default_factory=list)


def confusion(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    t = truth.astype(np.int64).ravel()
    if t.max(initial=0) >= n_classes:
        raise SystemExit(f"label value {int(t.max())} is not a class of this model ({n_classes} classes)")
    idx = t * n_classes + predicted.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def score_instances(
    sample: Sample, truth: np.ndarray, image: np.ndarray, model: Any, args: argparse.Namespace, totals: Totals
) -> dict[str, Any]:
    result = segment(image, model, output="instances", rgb=is_rgb(image), device=args.device)
    pred = result.labels
    seg = seg_measure(truth, pred)
    if sample.sparse:
        pred = restrict_to_annotated(truth, pred)
        totals.n_sparse += 1
    table = average_precision_table(truth, pred, thresholds=AP_THRESHOLDS)
    totals.tables.append(table)
    totals.seg += seg
    n_truth, n_pred = table[0].tp + table[0].fn, table[0].tp + table[0].fp
    totals.n_truth += n_truth
    totals.n_pred += n_pred
    return {
        "n_truth": n_truth,
        "n_pred": n_pred,
        "ap50": table[0].average_precision,
        "seg": seg.score,
        "sparse": sample.sparse,
        "seconds": result.seconds,
        "device": result.device,
    }


def score_semantic(
    truth: np.ndarray, image: np.ndarray, model: Any, args: argparse.Namespace, totals: Totals
) -> dict[str, Any]:
    result = segment(image, model, output="classes", rgb=is_rgb(image), device=args.device)
    conf = confusion(truth, result.labels, model.description.config.n_classes)
    totals.confusion = conf if totals.confusion is None else totals.confusion + conf
    return {"pixel_error": 1 - np.trace(conf) / conf.sum(), "seconds": result.seconds, "device": result.device}


def score_em(
    truth: np.ndarray, image: np.ndarray, model: Any, args: argparse.Namespace, totals: Totals
) -> dict[str, Any]:
    rule = model.description.instance_rule
    result = segment(image, model, output="instances", rgb=is_rgb(image), device=args.device, keep_probabilities=True)
    pred_interior = np.isin(np.argmax(result.probabilities, axis=0), rule.foreground_classes)
    true_interior = truth != 0
    truth_segments, _ = ndi.label(true_interior)  # 4-connected, as the challenge's script
    predicted = result.labels
    if args.fill_membranes:
        # challenge-style post-processing: every membrane pixel joins the cell it
        # is closest to in the probability landscape, so no gaps are left
        predicted = watershed(-result.probabilities[rule.foreground_classes].sum(axis=0), markers=predicted)
    rs = rand_scores(truth_segments, predicted)
    totals.rand.append((rs.error, rs.precision, rs.recall))
    conf = confusion(true_interior, pred_interior, 2)
    totals.confusion = conf if totals.confusion is None else totals.confusion + conf
    totals.n_truth += int(truth_segments.max())
    totals.n_pred += int(result.n_objects)
    return {
        "rand_error": rs.error,
        "pixel_error": 1 - np.trace(conf) / conf.sum(),
        "n_truth": int(truth_segments.max()),
        "n_pred": int(result.n_objects),
        "seconds": result.seconds,
        "device": result.device,
    }


def report(
    kind: str, totals: Totals, model: Any, header: str, seconds: float, seg_seconds: float, n_images: int
) -> tuple[str, dict[str, Any]]:
    lines = [header]
    out: dict[str, Any] = {"kind": kind, "n_images": n_images, "seconds": seconds, "segmentation_seconds": seg_seconds}
    timing = (
        f"seconds: {seconds:.1f} total, {seg_seconds:.1f} segmenting ({seg_seconds / max(n_images, 1):.2f} per image)"
    )
    if kind == "instances":
        pooled = pool_match_scores(totals.tables)
        at = {s.threshold: s for s in pooled}
        cols = "".join(f"{t:>8.1f}" for t in TABLE_THRESHOLDS)
        lines.append(f"{'IoU threshold':<14}{cols}")
        for label, get in [
            ("AP", lambda s: f"{s.average_precision:8.3f}"),
            ("F1", lambda s: f"{s.f1:8.3f}"),
            ("precision", lambda s: f"{s.precision:8.3f}"),
            ("recall", lambda s: f"{s.recall:8.3f}"),
            ("TP", lambda s: f"{s.tp:8d}"),
            ("FP", lambda s: f"{s.fp:8d}"),
            ("FN", lambda s: f"{s.fn:8d}"),
        ]:
            lines.append(f"{label:<14}" + "".join(get(at[t]) for t in TABLE_THRESHOLDS))
        lines.append(f"{'SEG':<14}{totals.seg.score:8.3f}   (mean IoU over {totals.seg.count} truth objects)")
        lines.append(
            f"images: {n_images}   objects: {totals.n_truth} truth, {totals.n_pred} predicted"
            + (f"   sparse frames: {totals.n_sparse}" if totals.n_sparse else "")
        )
        out.update(
            thresholds=[
                {
                    "iou": s.threshold,
                    "tp": s.tp,
                    "fp": s.fp,
                    "fn": s.fn,
                    "ap": s.average_precision,
                    "f1": s.f1,
                    "precision": s.precision,
                    "recall": s.recall,
                }
                for s in pooled
            ],
            seg=totals.seg.score,
            seg_objects=totals.seg.count,
            n_truth=totals.n_truth,
            n_pred=totals.n_pred,
            n_sparse=totals.n_sparse,
        )
    else:
        conf = totals.confusion
        iou = iou_from_confusion(conf)
        pixel_error = 1 - np.trace(conf) / conf.sum()
        names = ["membrane", "interior"] if kind == "em" else list(model.description.class_names)
        lines.append(f"{'class':<14}" + "".join(f"{n[:10]:>11}" for n in names) + f"{'mean':>11}")
        lines.append(f"{'IoU':<14}" + "".join(f"{v:11.3f}" for v in iou) + f"{np.nanmean(iou):11.3f}")
        lines.append(f"{'pixel error':<14}{pixel_error:11.4f}")
        out.update(
            iou={n: float(v) for n, v in zip(names, iou)},
            mean_iou=float(np.nanmean(iou)),
            pixel_error=float(pixel_error),
        )
        if kind == "em":
            err, prec, rec = (float(np.nanmean(col)) for col in zip(*totals.rand))
            lines.append(
                f"{'Rand error':<14}{err:11.4f}   (foreground-restricted, mean over images; "
                f"Rand precision {prec:.3f}, recall {rec:.3f})"
            )
            lines.append(f"images: {n_images}   segments: {totals.n_truth} truth, {totals.n_pred} predicted")
            out.update(
                rand_error=err, rand_precision=prec, rand_recall=rec, n_truth=totals.n_truth, n_pred=totals.n_pred
            )
        else:
            lines.append(f"images: {n_images}")
    lines.append(timing)
    return "\n".join(lines), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="shipped model name (e.g. nuclei) or .unet.safetensors path")
    parser.add_argument("--data", required=True, type=Path, help="data set folder")
    parser.add_argument("--split", default=None, help="subfolder to score (train, val, ...)")
    parser.add_argument("--kind", default="auto", choices=KINDS)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images (sorted by name)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--only-gray", action="store_true", help="skip RGB(A) colour images")
    parser.add_argument(
        "--sparse",
        default="auto",
        choices=("auto", "yes", "no"),
        help="treat frames as sparsely annotated: from a CSV's fully_annotated column (auto), all (yes), none (no)",
    )
    parser.add_argument(
        "--fill-membranes",
        action="store_true",
        help="EM only: grow the predicted cells over the membranes before the Rand error "
        "(the watershed post-processing of ISBI 2012 entries; the model's own output keeps "
        "membranes as 0)",
    )
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur of this sigma (pixels)")
    parser.add_argument("--noise", type=float, default=0.0, help="add Gaussian noise of this many image std")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_named_model(args.model)
    root, samples = find_samples(args.data, args.split)
    flags = partial_frames(args.data, root) if args.sparse == "auto" else {}
    for s in samples:
        s.sparse = args.sparse == "yes" or flags.get(s.image.name, False)

    kind = None
    totals = Totals()
    n_images = n_colour_skipped = 0
    seg_seconds = 0.0
    for sample in samples:
        if args.limit is not None and n_images >= args.limit:
            break
        image = tifffile.imread(sample.image)
        if args.only_gray and is_rgb(image):
            n_colour_skipped += 1
            continue
        truth = tifffile.imread(sample.labels)
        image = degraded(image, blur=args.blur, noise=args.noise, seed=n_images)
        kind = kind or choose_kind(args.kind, truth, model)
        if kind == "instances":
            row = score_instances(sample, truth, image, model, args, totals)
        elif kind == "semantic":
            row = score_semantic(truth, image, model, args, totals)
        else:
            row = score_em(truth, image, model, args, totals)
        seg_seconds += row["seconds"]
        totals.device = row.pop("device")
        n_images += 1
        totals.per_image.append({"file": sample.image.name, "rgb": is_rgb(image), **row})
        print(f"\r{n_images} images scored", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if not n_images:
        raise SystemExit("no images were scored")

    desc = model.description
    header = (
        f"model: {desc.name} ({args.model})   data: {root}   kind: {kind}   device: {totals.device}"
        + (f"   colour images skipped: {n_colour_skipped}" if n_colour_skipped else "")
        + (f"   limit: {args.limit}" if args.limit is not None else "")
        + (f"   degraded: blur {args.blur:g} px, noise {args.noise:g} std" if args.blur or args.noise else "")
    )
    text, numbers = report(kind, totals, model, header, time.perf_counter() - started, seg_seconds, n_images)
    print(text)
    if args.json:
        numbers.update(
            model=args.model,
            model_name=desc.name,
            data=str(root),
            only_gray=args.only_gray,
            colour_skipped=n_colour_skipped,
            limit=args.limit,
            per_image=totals.per_image,
        )
        args.json.write_text(json.dumps(numbers, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
