"""Helpers shared by the headless-core tests (imported explicitly, not a conftest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core import SegmentationModel, new_model
from napari_unet.core.progress import run_job


def drain(job: Any) -> tuple[list, Any]:
    """Run a job to the end: (every report it yielded, its result)."""
    reports: list = []
    value = run_job(job, on_progress=reports.append)
    return reports, value


def tiny_model(
    *, padding: str = "valid", depth: int = 2, base_features: int = 4, seed: int = 0, **options: Any
) -> SegmentationModel:
    """A small untrained model with reproducible random weights."""
    torch.manual_seed(seed)
    return new_model(depth=depth, base_features=base_features, padding=padding, **options)


class ThresholdNet(nn.Module):
    """A pointwise stand-in network: class 1 where the (first) input channel is above ``level``.

    Its output has the size of its input, so it pairs with ``padding="same"``
    descriptions. It makes segmentation results predictable, so the object
    bookkeeping (IDs, dtypes, planes) can be tested exactly.
    """

    def __init__(self, n_classes: int = 2, *, level: float = 0.5, gain: float = 20.0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.level = level
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, :1] - self.level) * self.gain
        logits = [-s, s] + [torch.full_like(s, -50.0)] * (self.n_classes - 2)
        return torch.cat(logits, dim=1)


def threshold_model(*, in_channels: int = 1) -> SegmentationModel:
    """A two-class (background, object) model whose network thresholds the input at 0.5."""
    base = new_model(
        depth=2, base_features=4, padding="same", class_names=("background", "object"), in_channels=in_channels
    )
    return SegmentationModel(base.description, ThresholdNet(2))  # type: ignore[arg-type]


def dots_image(n_rows: int, n_cols: int, *, size: int = 2, gap: int = 2) -> np.ndarray:
    """A float32 image of ``n_rows * n_cols`` separate bright squares on a dark background."""
    pitch = size + gap
    image = np.zeros((n_rows * pitch + gap, n_cols * pitch + gap), np.float32)
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = gap + r * pitch, gap + c * pitch
            image[y : y + size, x : x + size] = 1.0
    return image


def disks_image(seed: int, *, size: int = 64, n_disks: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, 1) float32 image of bright disks (radius 6) on noise, and its uint16 instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for k in range(1, n_disks + 1):
        cy, cx = rng.integers(8, size - 8, 2)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = k
    image = (labels > 0) * 200.0 + rng.normal(20, 5, (size, size))
    return image.astype(np.float32)[..., None], labels


class CountingArray:
    """A read-only array-like that records every block read from it.

    ``reads`` holds the number of elements of each ``__getitem__``;
    ``max_read`` (elements) makes larger reads fail loudly.
    """

    def __init__(self, data: np.ndarray, *, max_read: int | None = None) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.max_read = max_read
        self.reads: list[int] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        block = self._data[key]
        if block.size:  # dask probes with empty slices for the metadata
            self.reads.append(int(block.size))
        if self.max_read is not None and block.size > self.max_read:
            raise AssertionError(f"read {block.size} elements at once, more than {self.max_read}")
        return block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise AssertionError("the whole array was converted at once")
