"""Accuracy against magnification: the same val images and labels enlarged or shrunk.

Each image of a val split is resampled by each magnification (images linearly with
anti-aliasing by scikit-image, labels by nearest neighbour), then segmented twice with
the same model: at a fixed scale (``diameter="model"``: the image as it is) and with
``diameter="auto"`` (the object size estimated from the image). AP@0.5 pools TP/FP/FN
over the images; SEG is the Cell Tracking Challenge measure. The time is the wall time
of the segmentation calls of each column (one process, same machine).

Usage (repository root)::

    PYTHONPATH=src python benchmarks/object_size.py --model nuclei \\
        --data ../shared/data/dsb2018_nuclei --only-gray --limit 40
    PYTHONPATH=src python benchmarks/object_size.py --model nuclei \\
        --speed ../shared/data/ctc_fluo_c2dl_msc/val/images --limit 3   # time, as it is vs auto
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.transform import rescale

from napari_unet.core import load_named_model, segment
from napari_unet.core.inference.layout import infer_layout
from napari_unet.core.inference.model_fit import fit_notice
from napari_unet.core.inference.object_scale import TOLERANCE
from napari_unet.core.inference.resample import resample_labels, scaled_shape
from napari_unet.core.network.object_size import equivalent_diameters
from scoring import average_precision_table, pool_match_scores, seg_measure

MAGNIFICATIONS = (0.33, 0.5, 1.0, 2.0, 3.0)
SETTINGS = ("model", "auto")


@dataclass
class Column:
    """Pooled scores of one magnification and diameter setting."""

    tables: list
    seg_total: float = 0.0
    seg_count: int = 0
    seconds: float = 0.0
    factors: list | None = None

    def row(self) -> dict:
        pooled = pool_match_scores(self.tables)[0]
        return {
            "ap50": pooled.average_precision,
            "seg": self.seg_total / max(self.seg_count, 1),
            "seconds": self.seconds,
            "median_factor": float(np.median(self.factors)) if self.factors else 1.0,
        }


def val_pairs(data: Path, *, only_gray: bool, limit: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, labels) of the val split; gray images only when asked (DSB's ``images.csv``)."""
    kinds = {}
    table = data / "images.csv"
    if table.exists():
        with table.open() as fh:
            kinds = {row["file"]: row.get("kind") for row in csv.DictReader(fh)}
    pairs = []
    for path in sorted((data / "val" / "images").glob("*.tif")):
        if only_gray and kinds.get(path.name, "gray") != "gray":
            continue
        pairs.append((path.name, tifffile.imread(path), tifffile.imread(data / "val" / "labels" / path.name)))
        if limit and len(pairs) >= limit:
            break
    return pairs


def flagged_by_segment(image: np.ndarray, model) -> bool:
    """Whether Segment would give its model-fit notice for ``image`` (the same function, as ``segment`` reads it)."""
    layout = infer_layout(image.shape, in_channels=model.config.in_channels)
    return fit_notice(layout, layout.plane(image, next(layout.plane_indices())), model) is not None


def magnified(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """An image and its labels as an objective ``factor`` times stronger would show them."""
    if factor == 1.0:
        return image, labels
    shape = scaled_shape(labels.shape, factor)
    big = rescale(image.astype(np.float32), factor, order=1, anti_aliasing=factor < 1, preserve_range=True)
    big = big[: shape[0], : shape[1]]
    return big.astype(np.float32), resample_labels(labels, big.shape[:2])


def run(model, pairs, magnifications, settings, device: str) -> dict:
    """Scores per (magnification, setting)."""
    results: dict = {}
    for mag in magnifications:
        views = [magnified(image, labels, mag) for _, image, labels in pairs]
        for setting in settings:
            column = Column(tables=[], factors=[])
            for image, truth in views:
                started = time.perf_counter()
                diameter = _diameter_for(setting, model, truth, mag)
                result = segment(image, model, output_kind="instances", device=device, diameter=diameter)
                column.seconds += time.perf_counter() - started
                column.tables.append(average_precision_table(truth, result.labels, thresholds=(0.5,)))
                seg = seg_measure(truth, result.labels)
                column.seg_total += seg.total
                column.seg_count += seg.count
                column.factors.append(result.object_scale.factor)
            results[(mag, setting)] = column.row()
            row = results[(mag, setting)]
            print(
                f"  {mag:g}x {setting}: AP@0.5 {row['ap50']:.3f}, SEG {row['seg']:.3f}, {row['seconds']:.1f} s, "
                f"median factor {row['median_factor']:.2f}",
                flush=True,
            )
    return results


def _diameter_for(setting: str, model, truth: np.ndarray, mag: float) -> float | str:
    """What to give ``segment`` for a setting: a diameter word or number as it is, or one of two references.

    ``undo``: the diameter that resamples every image by ``1 / mag``, undoing the magnification
    (the best one fixed factor). ``oracle:T``: the diameter that brings the image's *true* median
    object diameter (from its labels) to ``T`` px at the model's scale, within the tolerance that
    leaves an image as it is (what a perfect per-image estimate with target ``T`` would do).
    """
    model_d = model.description.object_diameter_px
    if setting == "undo":
        return model_d * mag
    if setting.startswith("oracle:"):
        target = float(setting.split(":", 1)[1])
        diameters = equivalent_diameters(truth, exclude_border=False)
        if not diameters.size:
            return "model"
        factor = target / float(np.median(diameters))
        return "model" if 1 / TOLERANCE <= factor <= TOLERANCE else model_d / factor
    return setting


def print_table(results: dict, magnifications, settings) -> None:
    head = "| magnification | " + " | ".join(f"AP@0.5 {s} | SEG {s} | s {s}" for s in settings) + " | factor (auto) |"
    print(head)
    print("|" + "---|" * (2 + 3 * len(settings)))
    for mag in magnifications:
        cells = []
        for s in settings:
            r = results[(mag, s)]
            cells += [f"{r['ap50']:.3f}", f"{r['seg']:.3f}", f"{r['seconds']:.1f}"]
        auto = results.get((mag, "auto"), {}).get("median_factor", 1.0)
        print(f"| {mag:g}x | " + " | ".join(cells) + f" | {auto:.2f} |")


def speed(model, folder: Path, *, limit: int, device: str, repeats: int = 2) -> list[dict]:
    """Segment time of each image as it is, at a given diameter (the auto estimate) and on ``auto``.

    In one process, best of ``repeats``: the given diameter shows what resampling costs or saves,
    ``auto`` adds the estimating passes.
    """
    rows = []
    for path in sorted(folder.glob("*.tif"))[:limit]:
        image = tifffile.imread(path)
        estimate = segment(image, model, device=device).object_scale.diameter
        row: dict = {"image": path.name, "shape": image.shape, "diameter": estimate}
        for name, setting in (("as_is", "model"), ("given", estimate), ("auto", "auto")):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                result = segment(image, model, device=device, diameter=setting)
                times.append(time.perf_counter() - started)
            row[name] = min(times)
            row[f"factor_{name}"] = result.object_scale.factor
        rows.append(row)
        print(
            f"  {path.name} {image.shape}: {row['as_is']:.2f} s as it is; objects {estimate:.0f} px, "
            f"x{row['factor_given']:.2f}: {row['given']:.2f} s given that diameter "
            f"({row['as_is'] / row['given']:.1f}x faster), {row['auto']:.2f} s on auto (estimate included)",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_nuclei"))
    parser.add_argument("--only-gray", action="store_true")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--magnifications", type=float, nargs="+", default=list(MAGNIFICATIONS))
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTINGS),
        help="diameter settings to compare: auto, model, a number, or the references undo (resample by "
        "1/magnification) and oracle:T (each image's true median diameter brought to T px)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--speed",
        type=Path,
        metavar="FOLDER",
        help="instead: time Segment at the images' own scale and on auto for the TIFFs of FOLDER",
    )
    parser.add_argument(
        "--only-fitting",
        action="store_true",
        help="leave out the images Segment's model-fit notice flags (a background unlike the training images')",
    )
    args = parser.parse_args(argv)
    model = load_named_model(args.model)
    if args.speed is not None:
        print(
            f"{args.model} on {args.speed}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        )
        speed(model, args.speed, limit=args.limit, device=args.device)
        return 0
    pairs = val_pairs(args.data, only_gray=args.only_gray, limit=args.limit)
    if args.only_fitting:
        flagged = [name for name, image, _ in pairs if flagged_by_segment(image, model)]
        pairs = [pair for pair in pairs if pair[0] not in flagged]
        print(f"left out {len(flagged)} image(s) that Segment flags as unlike the model's training images: {flagged}")
    print(
        f"{args.model} (object size {model.description.object_diameter_px} px) on {len(pairs)} images of "
        f"{args.data.name}/val; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results = run(model, pairs, args.magnifications, args.settings, args.device)
    print_table(results, args.magnifications, args.settings)
    if args.json:
        rows = [{"magnification": m, "diameter": s, **r} for (m, s), r in results.items()]
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
