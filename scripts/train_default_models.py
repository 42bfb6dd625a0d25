"""Regenerate the shipped default models from ../shared/data.

Usage (from the repository root)::

    PYTHONPATH=src python scripts/train_default_models.py nuclei --minutes 20 --device auto

Every setting (data, recipe, seed) is recorded in the model file's training
history. Only the train split is trained on; the val split picks the best
checkpoint and is reported.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import tifffile

from napari_unet.core import InstanceRule, Normalization, load_model, new_model, save_model
from napari_unet.core.annotations import targets_from_instances, targets_from_semantic
from napari_unet.core.progress import run_job
from napari_unet.core.training import TrainingSample, TrainingSettings, train_job

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = ROOT / "src" / "napari_unet" / "models"

CONFIGS = {
    "nuclei": {
        "title": "Nuclei (fluorescence)",
        "description": (
            "Segments nuclei in fluorescence images (DAPI/Hoechst-like stains), 2-D, any bit depth. "
            "Trained on the grayscale images of the DSB 2018 stage1_train set (train split). "
            "Three classes (background, interior, boundary); objects by seeded watershed."
        ),
        "datasets": [("dsb2018_nuclei", "gray")],
        "val_datasets": [("dsb2018_nuclei", "gray")],
        "scheme": "instances",
        "architecture": {"depth": 4, "base_features": 16, "padding": "same", "norm": "batch"},
        "normalization": Normalization("percentile", 1.0, 99.8),
        "min_size": 30,
        "settings": {"patch_size": 128, "batch_size": 8, "learning_rate": 2e-3, "optimizer": "adamw",
                     "validate_every": 250, "mistake_weight": 1.0},
    },
    "em": {
        "title": "EM membranes (ISBI 2012)",
        "description": (
            "Segments neurite cross-sections in serial-section TEM (the U-Net paper's ISBI 2012 task). "
            "Classes: membrane (0) and cell interior (1); instances are connected cell interiors."
        ),
        "datasets": [("isbi2012_em", None)],
        "val_datasets": [("isbi2012_em", None)],
        "scheme": "semantic",
        "class_names": ["membrane", "cell"],
        "architecture": {"depth": 4, "base_features": 16, "padding": "same", "norm": "batch"},
        "normalization": Normalization("range", 0.0, 255.0),
        "min_size": 0,
        "settings": {"patch_size": 128, "batch_size": 8, "learning_rate": 2e-3, "optimizer": "adamw",
                     "validate_every": 250, "mistake_weight": 1.0},
    },
}


def load_split(dataset: str, split: str, kind: str | None, scheme: str, *, limit: int | None = None) -> list[TrainingSample]:
    """Annotated samples of one split of a shared dataset."""
    folder = DATA / dataset / split
    kinds = {}
    meta = DATA / dataset / "images.csv"
    if kind is not None and meta.exists():
        with meta.open() as fh:
            kinds = {row["file"]: row.get("kind") for row in csv.DictReader(fh)}
    samples = []
    for path in sorted((folder / "images").glob("*.tif")):
        if kind is not None and kinds.get(path.name, kind) != kind:
            continue
        image = tifffile.imread(path)
        labels = tifffile.imread(folder / "labels" / path.name)
        if image.ndim == 2:
            image = image[..., None]
        if scheme == "instances":
            target = targets_from_instances(labels)
            samples.append(TrainingSample(image, target, instances=labels, name=f"{dataset}/{split}/{path.name}"))
        else:
            target = targets_from_semantic(labels, n_classes=2)
            samples.append(TrainingSample(image, target, name=f"{dataset}/{split}/{path.name}"))
        if limit and len(samples) >= limit:
            break
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=2015)
    parser.add_argument("--val-limit", type=int, default=12, help="val images used to pick the best checkpoint")
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--learning-rate", type=float, default=None, help="override the config's learning rate")
    parser.add_argument("--from", dest="start", type=Path, default=None,
                        help="continue training this model file instead of starting from scratch")
    args = parser.parse_args(argv)
    cfg = CONFIGS[args.config]

    train = [s for ds, kind in cfg["datasets"] for s in load_split(ds, "train", kind, cfg["scheme"])]
    val = [s for ds, kind in cfg["val_datasets"] for s in load_split(ds, "val", kind, cfg["scheme"], limit=args.val_limit)]
    print(f"{len(train)} training images, {len(val)} validation images", flush=True)
    if args.start is not None:
        model = load_model(args.start)
    elif cfg["scheme"] == "instances":
        model = new_model(name=cfg["title"], description=cfg["description"], normalization=cfg["normalization"],
                          channel_names=["nuclei"], **cfg["architecture"])
    else:
        model = new_model(name=cfg["title"], description=cfg["description"], normalization=cfg["normalization"],
                          class_names=cfg["class_names"], channel_names=["EM"], **cfg["architecture"])
    rule = model.description.instance_rule
    model.description.instance_rule = InstanceRule(rule.method, rule.foreground_classes, rule.seed_classes,
                                                   min_size=cfg["min_size"])
    recipe = dict(cfg["settings"])
    if args.learning_rate is not None:
        recipe["learning_rate"] = args.learning_rate
    settings = TrainingSettings(steps=args.steps, max_seconds=args.minutes * 60, seed=args.seed, device=args.device,
                                **recipe)
    record = {"script": "scripts/train_default_models.py", "config": args.config,
              "datasets": [d for d, _ in cfg["datasets"]], "split": "train", "checkpoint_selection": "val"}
    started = time.perf_counter()

    def report(p):  # type: ignore[no-untyped-def]
        if "metric" in p.data or p.done % 50 == 0:
            extra = f" {p.data.get('metric_name', '')} {p.data['metric']:.3f}" if p.data.get("metric") is not None else ""
            print(f"[{time.perf_counter() - started:7.1f}s] {p.message}{extra}", flush=True)

    result = run_job(train_job(model, train, settings=settings, validation=val,
                                  from_scratch=args.start is None, record=record),
                     on_progress=report)
    out = args.output or MODELS / f"{args.config}.unet.safetensors"
    save_model(result.model, out, half=True)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB): best {result.metric_name} {result.best_metric:.3f} "
          f"after {result.steps_done} steps, {result.seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
