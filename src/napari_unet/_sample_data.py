"""Sample images for napari's File > Open Sample (small, shipped in the package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import tifffile

_FOLDER = Path(str(resources.files("napari_unet") / "sample_data"))
_CREDIT = "Kaggle 2018 Data Science Bowl (BBBC038v1), CC0"


def nuclei_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A fluorescence nuclei image (520 x 696, uint8), for a first Segment."""
    image = tifffile.imread(_FOLDER / "nuclei.tif")
    return [
        (image, {"name": "nuclei", "contrast_limits": _data_range(image), "metadata": {"source": _CREDIT}}, "image")
    ]


def nuclei_sample_with_labels() -> list[tuple[Any, dict[str, Any], str]]:
    """The nuclei image with its ground-truth instance labels, to try Fine-tune."""
    labels = tifffile.imread(_FOLDER / "nuclei_labels.tif")
    return [*nuclei_sample(), (labels, {"name": "nuclei ground truth", "metadata": {"source": _CREDIT}}, "labels")]


def crowded_nuclei_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A crowded field of 260 small nuclei (520 x 696, uint8) with its ground-truth labels."""
    image = tifffile.imread(_FOLDER / "nuclei_crowded.tif")
    labels = tifffile.imread(_FOLDER / "nuclei_crowded_labels.tif")
    return [
        (
            image,
            {"name": "crowded nuclei", "contrast_limits": _data_range(image), "metadata": {"source": _CREDIT}},
            "image",
        ),
        (labels, {"name": "crowded nuclei ground truth", "metadata": {"source": _CREDIT}}, "labels"),
    ]


def _data_range(image: Any) -> list[float]:
    """Contrast limits from the darkest to the brightest pixel.

    The samples use a fraction of the uint8 range (about 11 to 114), so
    napari's default limits (0 to 255) would show the nuclei dim grey.
    """
    return [float(image.min()), float(image.max())]
