"""Calibrate the outline threshold of each shipped model on its training data (no retraining).

Predicts the training split that ``scripts/train_default_models.py`` trains each
model on (the same files: fully annotated frames), chooses the instance rule's
``foreground_threshold`` that gives the best SEG there and then the
``seed_threshold`` that gives the best matched-object F1
(:func:`napari_unet.core.training.calibration.calibration_job`, the same
job Fine-tune runs after training), and writes them into the model
file; the weights are copied unchanged. The val split is not looked at: score
it afterwards with ``benchmarks/accuracy.py``.

Usage (from the repository root)::

    PYTHONPATH=src python scripts/calibrate_outlines.py nuclei cells   # write
    PYTHONPATH=src python scripts/calibrate_outlines.py --dry-run      # print only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_unet.core import load_model, save_model  # noqa: E402
from napari_unet.core.progress import run_job  # noqa: E402
from napari_unet.core.training.calibration import samples_calibration_job  # noqa: E402
from train_default_models import CONFIGS, DATA, MODELS, load_split  # noqa: E402

#: Models whose objects are calibrated by default (``em`` is judged by the Rand error, not SEG).
DEFAULT_MODELS = ("nuclei", "cells")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"among {', '.join(sorted(CONFIGS))}")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the calibration, do not write")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}")
    for config in args.models or DEFAULT_MODELS:
        cfg = CONFIGS[config]
        samples = [s for ds, kind in cfg["datasets"] for s in load_split(args.data, ds, "train", kind, cfg["scheme"])]
        path = MODELS / f"{config}.unet.safetensors"
        model = load_model(path)
        model.description.instance_rule = model.description.instance_rule.with_foreground_threshold(None)
        calibration = run_job(samples_calibration_job(model, samples, device=args.device))
        if calibration is None:
            print(f"{config}: no objects to calibrate on")
            continue
        table = ", ".join(f"{'argmax' if t is None else t}: {v:.3f}" for t, v in calibration.scores.items())
        print(f"{config}: {calibration.summary()}\n  SEG {table}")
        if calibration.seeds is not None:
            seeds = calibration.seeds.scores.items()
            print("  seeds F1@0.5 " + ", ".join(f"{'argmax' if t is None else t}: {v:.3f}" for t, v in seeds))
        if args.dry_run:
            continue
        model.description.instance_rule = calibration.fitted(model.description.instance_rule)
        history = model.description.training_history
        if history:  # beside the run that made the weights, where a training run records its own calibration
            history[-1]["outline_calibration"] = {**calibration.to_dict(), "command": "scripts/calibrate_outlines.py"}
        save_model(model, path, half=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
