"""Regenerate the shipped default models from ../shared/data.

Usage (from the repository root)::

    PYTHONPATH=src python scripts/train_default_models.py nuclei --minutes 20 --device auto

Every setting (data, recipe, seed) is recorded in the model file's training
history. Only the train split is trained on; the val split picks the best
checkpoint and is reported. After training, the instance rule's outline
threshold is fitted to the training objects (as Fine-tune does; for the
already shipped weights, ``scripts/calibrate_outlines.py`` did the same).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage import measure

from napari_unet.core import InstanceRule, Normalization, load_model, new_model, save_model
from napari_unet.core.progress import run_job
from napari_unet.core.training.annotations import TrainingTarget, targets_from_instances
from napari_unet.core.training.loop import TrainingSample, TrainingSettings, train_job
from napari_unet.core.training.weight_map import class_balance_weights, unet_weight_map

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = ROOT / "src" / "napari_unet" / "models"

SETTINGS_GPU = {
    "patch_size": 256,
    "batch_size": 8,
    "learning_rate": 2e-3,
    "optimizer": "adamw",
    "validate_every": 500,
    "mistake_weight": 1.0,
    "schedule": "cosine",
    "loader_threads": 4,
    "weight_average": 0.0,  # the shipped weights were trained before the averaged weights (a cosine decays anyway)
}

#: Fine-tuning a shipped model into a new one on 2 CPU cores: the Fine-tune recipe
#: (napari_unet.core.training.recipe: patches, rate, pull toward the start) with a cosine decay
#: to the end of the fixed budget.
SETTINGS_CPU_FROM_MODEL = {
    "patch_size": 128,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "optimizer": "adamw",
    "validate_every": 250,
    "mistake_weight": 1.0,
    "schedule": "cosine",
    "loader_threads": 1,
    "anchor_weight": 0.001,
    "weight_average": 0.0,  # as the shipped phase model was trained
}

CONFIGS = {
    "nuclei": {
        "title": "Nuclei (fluorescence)",
        "description": (
            "Segments nuclei in fluorescence images (DAPI/Hoechst-like stains), 2-D, any bit depth. "
            "Trained on the grayscale images of the DSB 2018 stage1_train set and the fully annotated "
            "frames of the Cell Tracking Challenge sets Fluo-N2DH-GOWT1 and Fluo-N2DH-SIM+ (train splits). "
            "Three classes (background, interior, boundary); objects by seeded watershed."
        ),
        "datasets": [("dsb2018_nuclei", "gray"), ("ctc_fluo_n2dh_gowt1", None), ("ctc_fluo_n2dh_sim_plus", None)],
        "val_datasets": [("dsb2018_nuclei", "gray")],
        "scheme": "instances",
        "architecture": {"depth": 4, "base_features": 16, "padding": "same", "norm": "batch"},
        "normalization": Normalization("percentile", 1.0, 99.8),
        "min_size": 30,
        "settings": SETTINGS_GPU,
    },
    "cells": {
        "title": "Whole cells (fluorescence)",
        "description": (
            "Segments whole cells in fluorescence images (cytoplasmic GFP-like stains), 2-D, any bit depth. "
            "Trained on the fully annotated frames of the Cell Tracking Challenge set Fluo-C2DL-MSC "
            "(rat mesenchymal stem cells, sequence 01, train split). "
            "Three classes (background, interior, boundary); objects by seeded watershed."
        ),
        "datasets": [("ctc_fluo_c2dl_msc", None)],
        "val_datasets": [("ctc_fluo_c2dl_msc", None)],
        "scheme": "instances",
        "architecture": {"depth": 5, "base_features": 16, "padding": "same", "norm": "batch"},
        "normalization": Normalization("percentile", 1.0, 99.8),
        "min_size": 200,
        "settings": SETTINGS_GPU,
    },
    "phase": {
        "title": "Whole cells (phase contrast)",
        "description": (
            "Segments whole cells in 2-D phase-contrast images (bright halo, dark interior on a grey "
            "background), any bit depth. Fine-tuned from the cells model on the 11 training frames of the Cell "
            "Tracking Challenge set PhC-C2DH-U373 (glioblastoma-astrocytoma U373 cells, sequence 01, train "
            "split), the U-Net paper's phase-contrast set. Three classes (background, interior, boundary); "
            "objects by seeded watershed."
        ),
        "datasets": [("ctc_phc_c2dh_u373", None)],
        "val_datasets": [("ctc_phc_c2dh_u373", None)],
        "scheme": "instances",
        "start": "cells",
        "select_checkpoint": False,
        "channel": "phase contrast",
        "architecture": {"depth": 5, "base_features": 16, "padding": "same", "norm": "batch"},
        "normalization": Normalization("percentile", 1.0, 99.8),
        "min_size": 200,
        "settings": {**SETTINGS_CPU_FROM_MODEL, "augment_degradation": True},
    },
    "em": {
        "title": "EM membranes (ISBI 2012)",
        "description": (
            "Segments neurite cross-sections in serial-section TEM (the U-Net paper's ISBI 2012 task). "
            "Classes: membrane (0) and cell interior (1); instances are connected cell interiors."
        ),
        "datasets": [("isbi2012_em", None)],
        "val_datasets": [("isbi2012_em", None)],
        "scheme": "membranes",
        "class_names": ["membrane", "cell"],
        "architecture": {"depth": 5, "base_features": 16, "padding": "same", "norm": "batch"},
        "normalization": Normalization("range", 0.0, 255.0),
        "min_size": 0,
        # cells are seeded where the network is sure (p > 0.9) and grow over the
        # cell class: a faint gap in a membrane no longer merges two neurites
        # (val Rand error 0.104 with plain connected components, 0.075 seeded)
        "instance_rule": {
            "method": "seeded_watershed",
            "foreground_classes": [1],
            "seed_classes": [1],
            "seed_threshold": 0.9,
        },
        "settings": SETTINGS_GPU,
    },
}


def fully_annotated(dataset_folder: Path) -> dict[str, bool]:
    """``frames.csv``'s ``fully_annotated`` flag per file (Cell Tracking Challenge sets)."""
    table = dataset_folder / "frames.csv"
    if not table.exists():
        return {}
    with table.open() as fh:
        return {row["file"]: row.get("fully_annotated", "True") == "True" for row in csv.DictReader(fh)}


def membrane_target(labels: np.ndarray) -> tuple[TrainingTarget, np.ndarray]:
    """Membrane (0) / cell (1) classes with the paper's weight map on touching cells."""
    cells = labels > 0
    instances = measure.label(cells, connectivity=1)
    classes = cells.astype(np.int64)
    weights = unet_weight_map(instances, w0=10.0, sigma=5.0, class_weights=class_balance_weights(classes))
    return TrainingTarget(classes, weights), instances


def load_split(
    data: Path, dataset: str, split: str, kind: str | None, scheme: str, *, limit: int | None = None
) -> list[TrainingSample]:
    """Annotated samples of one split of a shared dataset (complete frames only)."""
    folder = data / dataset / split
    kinds = {}
    meta = data / dataset / "images.csv"
    if kind is not None and meta.exists():
        with meta.open() as fh:
            kinds = {row["file"]: row.get("kind") for row in csv.DictReader(fh)}
    complete = fully_annotated(data / dataset)
    samples = []
    for path in sorted((folder / "images").glob("*.tif")):
        if kind is not None and kinds.get(path.name, kind) != kind:
            continue
        if not complete.get(path.name, True):
            continue  # partly labelled frame: unlabelled cells would be taught as background
        image = tifffile.imread(path)
        labels = tifffile.imread(folder / "labels" / path.name)
        if image.ndim == 2:
            image = image[..., None]
        name = f"{dataset}/{split}/{path.name}"
        if scheme == "instances":
            samples.append(TrainingSample(image, targets_from_instances(labels), instances=labels, name=name))
        else:
            target, cells = membrane_target(labels)
            samples.append(TrainingSample(image, target, instances=cells, name=name))
        if limit and len(samples) >= limit:
            break
    return samples


def instance_rule(cfg: dict, default: InstanceRule) -> InstanceRule:
    """The config's instance rule: the model's default with its min size, or its own."""
    if "instance_rule" in cfg:
        return InstanceRule(**cfg["instance_rule"], min_size=cfg["min_size"])
    return InstanceRule(default.method, default.foreground_classes, default.seed_classes, min_size=cfg["min_size"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding the shared datasets")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=2015)
    parser.add_argument("--loader-threads", type=int, default=None, help="override the config's patch threads")
    parser.add_argument("--val-limit", type=int, default=16, help="val images used to pick the best checkpoint")
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--learning-rate", type=float, default=None, help="override the config's learning rate")
    parser.add_argument(
        "--from",
        dest="start",
        type=Path,
        default=None,
        help="continue training this model file instead of starting from scratch",
    )
    parser.add_argument(
        "--cpu-recipe",
        action="store_true",
        help="with --from: the recipe for fine-tuning a shipped model on 2 CPU cores (SETTINGS_CPU_FROM_MODEL)",
    )
    parser.add_argument(
        "--augment-degradation", action="store_true", help="also blur some patches and add noise to some"
    )
    args = parser.parse_args(argv)
    cfg = CONFIGS[args.config]

    train = [s for ds, kind in cfg["datasets"] for s in load_split(args.data, ds, "train", kind, cfg["scheme"])]
    # a set whose val frames come from the training sequence (PhC-U373) would flatter the
    # checkpoint they pick: such a config trains a fixed budget and keeps the last weights
    val = [
        s
        for ds, kind in cfg["val_datasets"]
        for s in load_split(args.data, ds, "val", kind, cfg["scheme"], limit=args.val_limit)
        if cfg.get("select_checkpoint", True)
    ]
    print(f"{len(train)} training images, {len(val)} validation images", flush=True)
    from_model = args.start is not None or "start" in cfg
    if args.start is not None:
        model = load_model(args.start)
    elif "start" in cfg:  # a new model made from a shipped one: its own name, data and object size
        model = load_model(MODELS / f"{cfg['start']}.unet.safetensors")
        model.description.name = cfg["title"]
        model.description.description = cfg["description"]
        model.description.channel_names = [cfg.get("channel", "fluorescence")]
        model.description.object_diameter_px = None  # measured again on its training objects
        model.description.instance_rule = model.description.instance_rule.with_foreground_threshold(None)
    elif cfg["scheme"] == "instances":
        model = new_model(
            name=cfg["title"],
            description=cfg["description"],
            normalization=cfg["normalization"],
            channel_names=[cfg.get("channel", "fluorescence")],
            **cfg["architecture"],
        )
    else:
        model = new_model(
            name=cfg["title"],
            description=cfg["description"],
            normalization=cfg["normalization"],
            class_names=cfg["class_names"],
            channel_names=["EM"],
            **cfg["architecture"],
        )
    model.description.instance_rule = instance_rule(cfg, model.description.instance_rule)
    recipe = dict(SETTINGS_CPU_FROM_MODEL if args.cpu_recipe else cfg["settings"])
    if args.augment_degradation:
        recipe["augment_degradation"] = True
    if args.learning_rate is not None:
        recipe["learning_rate"] = args.learning_rate
    if args.loader_threads is not None:
        recipe["loader_threads"] = args.loader_threads
    # the outline threshold is fitted to the training objects after training (SEG); EM is judged by
    # the Rand error, which that fit does not measure, so its rule stays as configured
    settings = TrainingSettings(
        steps=args.steps,
        max_seconds=args.minutes * 60,
        seed=args.seed,
        device=args.device,
        calibrate_outlines=cfg["scheme"] == "instances",
        **recipe,
    )
    record = {
        "script": "scripts/train_default_models.py",
        "config": args.config,
        "datasets": [d if k is None else f"{d} ({k} images)" for d, k in cfg["datasets"]],
        "split": "train (fully annotated frames)",
        "checkpoint_selection": f"val (first {args.val_limit})" if val else "none (the last weights)",
        "architecture": cfg["architecture"],
        "min_size": cfg["min_size"],
        "seed": args.seed,
        **({"started_from": cfg["start"]} if "start" in cfg and args.start is None else {}),
    }
    started = time.perf_counter()

    def report(p):  # type: ignore[no-untyped-def]
        if "metric" in p.data or p.done % 50 == 0:
            extra = (
                f" {p.data.get('metric_name', '')} {p.data['metric']:.3f}" if p.data.get("metric") is not None else ""
            )
            print(f"[{time.perf_counter() - started:7.1f}s] {p.message}{extra}", flush=True)

    result = run_job(
        train_job(model, train, settings=settings, validation=val, from_scratch=not from_model, record=record),
        on_progress=report,
    )
    out = args.output or MODELS / f"{args.config}.unet.safetensors"
    save_model(result.model, out, half=True)
    print(
        f"saved {out} ({out.stat().st_size / 1e6:.1f} MB): best {result.metric_name or 'metric'} "
        f"{result.best_metric if result.best_metric is not None else float('nan'):.3f} "
        f"after {result.steps_done} steps, {result.seconds / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
