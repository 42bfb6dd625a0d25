"""Regenerate the explanatory figures in docs/images from ../shared/data.

Usage (repository root): ``PYTHONPATH=src python docs/make_figures.py``
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from napari_unet.core.training.annotations import targets_from_instances
from napari_unet.core.training.augment import augment_sample

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
SAMPLE = ROOT / "src" / "napari_unet" / "sample_data"

CLASS_COLOURS = np.array([[30, 30, 30], [60, 180, 75], [255, 200, 40]], np.uint8)  # bg, interior, boundary
IGNORE_COLOUR = np.array([0, 0, 0], np.uint8)


def gray(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.8])
    g = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    return (np.stack([g] * 3, -1) * 255).astype(np.uint8)


def heat(values: np.ndarray) -> np.ndarray:
    v = np.clip(values / np.percentile(values, 99.5), 0, 1) ** 0.5
    return (np.stack([v, v**2, 0.2 + 0 * v], -1) * 255).astype(np.uint8)


def overlay(rgb: np.ndarray, mask: np.ndarray, colour, alpha: float = 0.6) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out.astype(np.uint8)


def panel(*images: np.ndarray, gap: int = 6) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    parts = []
    for i in images:
        parts.append(np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0)), constant_values=255))
        parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.repeat(np.repeat(np.concatenate(parts[:-1], axis=1), 2, axis=0), 2, axis=1)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    image = tifffile.imread(SAMPLE / "nuclei.tif")[100:260, 200:400].astype(np.float32)
    labels = tifffile.imread(SAMPLE / "nuclei_labels.tif")[100:260, 200:400]
    target = targets_from_instances(labels)
    base = gray(image)

    # 1. dense corrections: instance labels -> three classes and the paper's weight map
    classes_rgb = CLASS_COLOURS[target.classes]
    iio.imwrite(OUT / "corrections_targets.png", panel(base, classes_rgb, heat(target.weights)))

    # 2. sparse scribbles: 0 = not annotated, 1 = background, 2 = interior, 3 = boundary
    from skimage.draw import line
    from skimage.measure import regionprops
    from skimage.morphology import dilation, disk

    scribbles = np.zeros(labels.shape, np.uint8)
    for rr, cc in (line(6, 5, 6, 120), line(150, 60, 120, 190), line(40, 5, 100, 5)):
        scribbles[rr, cc] = 1  # background strokes
    for region in regionprops(labels)[::2]:  # a stroke across every other nucleus
        cy, cx = (int(v) for v in region.centroid)
        half = max(2, int(region.axis_minor_length / 3))
        rr, cc = line(cy, max(cx - half, 0), cy, min(cx + half, labels.shape[1] - 1))
        scribbles[rr, cc] = np.where(labels[rr, cc] == region.label, 2, scribbles[rr, cc])
    scribbles = np.maximum(dilation(scribbles, disk(1)) * (scribbles == 0), scribbles)
    shown = base.copy()
    shown = overlay(shown, scribbles == 1, (80, 140, 255), 0.9)
    shown = overlay(shown, scribbles == 2, CLASS_COLOURS[1], 0.9)
    painted = np.array([[0, 0, 0], [80, 140, 255], list(CLASS_COLOURS[1])], np.uint8)[scribbles]
    ignored = np.where((scribbles == 0)[..., None], IGNORE_COLOUR, painted)
    iio.imwrite(OUT / "scribbles.png", panel(shown, ignored))

    # 3. elastic deformation as in the paper: image and labels move together
    rng = np.random.default_rng(3)
    warped, warped_classes = augment_sample(
        image[..., None], target.classes, rng=rng, flips=False, rotate90=False, intensity=False, elastic_sigma=10.0
    )[:2]
    iio.imwrite(OUT / "elastic.png", panel(base, gray(warped[..., 0]), CLASS_COLOURS[np.maximum(warped_classes, 0)]))
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))}")


if __name__ == "__main__":
    main()
