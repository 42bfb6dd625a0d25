"""What validation during training measures: IoU of classes and matched-object F1.

The scores only the benchmarks report (AP tables, Rand and pixel error, the Cell Tracking
Challenge SEG) are in ``benchmarks/scoring.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def class_iou(
    truth: np.ndarray, predicted: np.ndarray, /, *, n_classes: int, ignore: np.ndarray | None = None
) -> np.ndarray:
    """Intersection over union per class.

    Returns
    -------
    numpy.ndarray
        (n_classes,) float; NaN for a class absent from both images.
    """
    keep = np.ones(truth.shape, bool) if ignore is None else ~ignore
    t = truth[keep].astype(np.int64)
    p = predicted[keep].astype(np.int64)
    conf = np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def iou_matrix(truth: np.ndarray, predicted: np.ndarray, /) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every ground-truth and every predicted object.

    Returns
    -------
    iou : numpy.ndarray
        (n_truth, n_pred) float.
    truth_ids, pred_ids : numpy.ndarray
        The object IDs along each axis.
    """
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(predicted, return_inverse=True)
    t_inv = t_inv.ravel()
    p_inv = p_inv.ravel()
    counts = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    t_area = counts.sum(1, keepdims=True)
    p_area = counts.sum(0, keepdims=True)
    union = t_area + p_area - counts
    iou = counts / np.maximum(union, 1)
    t_keep = t_ids != 0
    p_keep = p_ids != 0
    return iou[np.ix_(t_keep, p_keep)], t_ids[t_keep], p_ids[p_keep]


@dataclass(frozen=True)
class MatchScores:
    """Object matching at one IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1)

    @property
    def average_precision(self) -> float:
        """TP / (TP + FP + FN), the DSB 2018 / StarDist definition."""
        return self.tp / max(self.tp + self.fp + self.fn, 1)


def match_objects(truth: np.ndarray, predicted: np.ndarray, /, *, threshold: float = 0.5) -> MatchScores:
    """Match objects one-to-one by IoU and count hits and misses.

    For ``threshold >= 0.5`` a match is unique, so thresholding the IoU
    matrix is an optimal matching; below 0.5 a maximum-weight assignment is
    used.

    Examples
    --------
    >>> a = np.zeros((4, 4), int); a[:2, :2] = 1; a[2:, 2:] = 2
    >>> b = a.copy(); b[2:, 2:] = 0
    >>> s = match_objects(a, b)
    >>> (s.tp, s.fp, s.fn)
    (1, 0, 1)
    """
    iou, t_ids, p_ids = iou_matrix(truth, predicted)
    if iou.size == 0:
        tp = 0
    elif threshold >= 0.5:
        tp = int((iou > threshold).sum())
    else:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-iou)
        tp = int((iou[rows, cols] > threshold).sum())
    return MatchScores(threshold, tp, len(p_ids) - tp, len(t_ids) - tp)


def check_same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Refuse two arrays of different shapes, naming ``what`` they are."""
    if a.shape != b.shape:
        raise ValueError(f"{what} must have the same shape, got {a.shape} and {b.shape}")


def region_match(
    truth: np.ndarray, predicted: np.ndarray, region: np.ndarray, /, *, threshold: float = 0.5
) -> MatchScores:
    """Object matching inside ``region`` only: the honest score of a held-back part of an image.

    Ground-truth objects count when they lie wholly inside ``region``
    (objects cut by its edge are left out). A predicted object counts when
    more than half of it lies inside ``region`` and it does not match (IoU
    above ``threshold``) a ground-truth object that was left out, so objects
    found outside the region, where there is no ground truth to compare
    with, are never false positives.

    Parameters
    ----------
    truth, predicted : numpy.ndarray
        Instance labels of the whole plane (0 = background).
    region : numpy.ndarray of bool
        The scored region, shaped like ``truth``.
    threshold : float
        IoU above which two objects match.

    Returns
    -------
    MatchScores

    Examples
    --------
    >>> truth = np.zeros((4, 8), int); truth[:, 5:7] = 1
    >>> pred = truth.copy(); pred[:2, :2] = 2   # an object outside the region
    >>> region = np.zeros((4, 8), bool); region[:, 4:] = True
    >>> s = region_match(truth, pred, region)
    >>> (s.tp, s.fp, s.fn)
    (1, 0, 0)
    """
    region = np.asarray(region, bool)
    kept_truth = _objects_inside(truth, region, fraction=1.0)
    kept_pred = _objects_inside(predicted, region, fraction=0.5)
    left_out = np.where(np.isin(truth, kept_truth) | (truth == 0), 0, truth)
    if left_out.any() and kept_pred.size:
        iou, _, p_ids = iou_matrix(left_out, np.where(np.isin(predicted, kept_pred), predicted, 0))
        matched_left_out = p_ids[(iou > threshold).any(axis=0)] if iou.size else p_ids[:0]
        kept_pred = np.setdiff1d(kept_pred, matched_left_out)
    return match_objects(
        np.where(np.isin(truth, kept_truth), truth, 0),
        np.where(np.isin(predicted, kept_pred), predicted, 0),
        threshold=threshold,
    )


def _objects_inside(labels: np.ndarray, region: np.ndarray, /, *, fraction: float) -> np.ndarray:
    """IDs of objects with at least ``fraction`` (1.0: all) of their pixels in ``region`` (more than, below 1)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.ravel()
    total = np.bincount(inverse, minlength=len(ids))
    inside = np.bincount(inverse, weights=region.ravel(), minlength=len(ids))
    keep = inside >= total if fraction >= 1.0 else inside > fraction * total
    keep &= ids != 0
    return ids[keep]
