"""Record in each shipped model the object size and the backgrounds it was trained on (no retraining).

Measures the median equivalent diameter of the objects of the training data that
``scripts/train_default_models.py`` trains each model on (the same files: train
split, fully annotated frames), and the 10th-90th percentiles of the images' median
intensity after the model's normalisation, and writes them into the model file's
description as ``object_diameter_px`` and ``background_intensity`` (what training
records for a new model); the weights are copied unchanged.

Usage (from the repository root)::

    PYTHONPATH=src python scripts/record_object_sizes.py            # all shipped models
    PYTHONPATH=src python scripts/record_object_sizes.py --dry-run  # print only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_unet.core import SegmentationModel, load_model, save_model  # noqa: E402
from napari_unet.core.inference.model_fit import intensity_range, median_intensity  # noqa: E402
from napari_unet.core.training.loop import TrainingSample  # noqa: E402
from napari_unet.core.training.object_sizes import pooled_diameter  # noqa: E402
from train_default_models import CONFIGS, DATA, MODELS, load_split  # noqa: E402


def training_samples(config: str, data: Path = DATA) -> list[TrainingSample]:
    """The training samples ``scripts/train_default_models.py`` trains a shipped model on."""
    cfg = CONFIGS[config]
    return [s for ds, kind in cfg["datasets"] for s in load_split(data, ds, "train", kind, cfg["scheme"])]


def training_diameter(samples: list[TrainingSample], config: str) -> float:
    """Median object diameter (px) of a shipped model's training samples."""
    diameter = pooled_diameter(s.instances for s in samples)
    if diameter is None:
        raise SystemExit(f"{config}: no objects in its training data")
    return diameter


def training_background(samples: list[TrainingSample], model: SegmentationModel, config: str) -> tuple[float, float]:
    """The 10th-90th percentiles of the training images' median intensity after the model's normalisation."""
    found = intensity_range(median_intensity(s.image, model) for s in samples)
    if found is None:
        raise SystemExit(f"{config}: no training images")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"among {', '.join(sorted(CONFIGS))} (default: all)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--dry-run", action="store_true", help="print the sizes, do not write")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}")
    for config in args.models or sorted(CONFIGS):
        samples = training_samples(config, args.data)
        diameter = training_diameter(samples, config)
        path = MODELS / f"{config}.unet.safetensors"
        print(f"{config}: median object diameter {diameter:.2f} px over {len(samples)} training planes")
        if args.dry_run:
            continue
        model = load_model(path)
        background = training_background(samples, model, config)
        print(f"{config}: median normalised intensity {background[0]:.3f}-{background[1]:.3f} (p10-p90)")
        model.description.object_diameter_px = round(diameter, 2)
        model.description.background_intensity = background
        save_model(model, path, half=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
