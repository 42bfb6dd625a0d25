"""Input normalisation stored with a model.

A model is trained on intensities mapped in one particular way; the same
mapping must be applied at prediction time, whatever the dtype of the new
image. The mapping is therefore part of the model file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

NormKind = Literal["percentile", "range", "zscore"]

#: Largest number of pixels read to estimate percentiles of a big (dask) plane.
_PERCENTILE_SAMPLE = 2_000_000


@dataclass(frozen=True)
class Normalization:
    """How raw intensities become network inputs, per channel.

    Parameters
    ----------
    kind : {"percentile", "range", "zscore"}
        ``"percentile"``: map the ``low``/``high`` percentiles of each image
        channel to 0 and 1 (robust to dtype and exposure; the default).
        ``"range"``: map the fixed values ``low``/``high`` to 0 and 1 (e.g.
        0 and 255 for 8-bit EM).
        ``"zscore"``: subtract the mean and divide by the standard deviation.
    low, high : float
        Percentiles (0-100) for ``"percentile"``, intensities for ``"range"``;
        ignored for ``"zscore"``.
    """

    kind: NormKind = "percentile"
    low: float = 1.0
    high: float = 99.8

    def __post_init__(self) -> None:
        if self.kind not in ("percentile", "range", "zscore"):
            raise ValueError(f"normalisation kind must be percentile, range or zscore, got {self.kind!r}")
        if self.kind != "zscore" and not self.high > self.low:
            raise ValueError(f"normalisation needs high > low, got low={self.low}, high={self.high}")
        if self.kind == "percentile" and not (0 <= self.low < self.high <= 100):
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Build from a dict written by :meth:`to_dict`; ``low`` and ``high`` must be finite numbers."""
        if not isinstance(data, dict):
            raise ValueError(f"the normalisation must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"kind", "low", "high"}
        if unknown:
            raise ValueError(f"unknown normalisation settings {sorted(unknown)}")
        return cls(kind=data["kind"], low=_finite(data, "low"), high=_finite(data, "high"))

    def statistics(self, plane: Any) -> np.ndarray:
        """Per-channel ``(offset, scale)`` for one plane shaped (Y, X, C).

        Works on numpy and dask arrays; for large arrays only a regular
        subsample is read. NaN and Inf pixels are ignored.

        Returns
        -------
        numpy.ndarray
            Shape (C, 2), float64: ``normalised = (raw - offset) / scale``.
        """
        n_channels = plane.shape[-1]
        stats = np.empty((n_channels, 2), dtype=np.float64)
        if self.kind == "range":
            stats[:, 0] = self.low
            stats[:, 1] = self.high - self.low
            return stats
        sample = _subsample(plane)
        for c in range(n_channels):
            values = sample[..., c].astype(np.float64, copy=False).ravel()
            values = values[np.isfinite(values)]
            if values.size == 0:
                stats[c] = (0.0, 1.0)
                continue
            if self.kind == "percentile":
                lo, hi = np.percentile(values, [self.low, self.high])
                stats[c] = (lo, hi - lo)
            else:
                stats[c] = (values.mean(), values.std())
            if not stats[c, 1] > 0:  # constant image: avoid dividing by zero
                stats[c, 1] = 1.0
        return stats


def _finite(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"normalisation {key} must be a finite number, got {value!r}")
    return float(value)


def _subsample(plane: Any) -> np.ndarray:
    """Read a plane, or a regular subsample of it if it is very large."""
    h, w = plane.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / _PERCENTILE_SAMPLE))))
    sub = plane[::step, ::step]
    return np.asarray(sub.compute() if hasattr(sub, "compute") else sub)


def apply_normalization(tile: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Normalise a tile (..., C) with per-channel ``(offset, scale)``.

    Non-finite pixels (NaN, +-Inf) become 0 after normalisation so that they
    cannot poison the network's output for their neighbours.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.
    """
    out = tile.astype(np.float32, copy=True)
    out -= stats[:, 0].astype(np.float32)
    out /= stats[:, 1].astype(np.float32)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
