"""Scores the benchmarks report: AP tables (DSB 2018 / StarDist), Rand and pixel error (ISBI 2012), SEG (CTC).

Validation during training needs only matched-object F1 and class IoU, which live in the
core (:mod:`napari_unet.core.training.metrics`); these are for measuring shipped models
against the literature. Importable by the benchmark scripts (their folder is on
``sys.path``) and by the tests (``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_unet.core.training.metrics import MatchScores, check_same_shape, iou_matrix

# ---------------------------------------------------------------------------

#: IoU thresholds of the DSB 2018 / StarDist average-precision table, 0.5 to 0.9 in steps of 0.05.
AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(9))


def _contingency(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero cells of the contingency table of two label images.

    Returns the truth label, predicted label and pixel count of every pair of
    labels that share at least one pixel (a sparse table: memory grows with
    the number of overlapping pairs, not with the product of label counts).
    """
    t = np.asarray(truth)
    p = np.asarray(predicted)
    check_same_shape(t, p, "the two label images")
    t_ids, t_inv = np.unique(t.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(p.ravel(), return_inverse=True)
    key = t_inv.ravel().astype(np.int64) * len(p_ids) + p_inv.ravel()
    pairs, counts = np.unique(key, return_counts=True)
    return t_ids[pairs // len(p_ids)], p_ids[pairs % len(p_ids)], counts


def _sum_squared_marginal(labels: np.ndarray, counts: np.ndarray) -> float:
    """Sum over labels of (pixels carrying that label) squared."""
    if labels.size == 0:
        return 0.0
    _, inverse = np.unique(labels, return_inverse=True)
    marginal = np.bincount(inverse.ravel(), weights=counts)
    return float(marginal @ marginal)


@dataclass(frozen=True)
class RandScores:
    """Rand precision and recall of a segmentation (pairs of pixels).

    Attributes
    ----------
    precision : float
        Of the pixel pairs the prediction puts in one segment, the fraction
        that also share a ground-truth segment (hurt by merges).
    recall : float
        Of the pixel pairs that share a ground-truth segment, the fraction the
        prediction also puts together (hurt by splits).
    """

    precision: float
    recall: float

    @property
    def f_score(self) -> float:
        """Rand F-score, ``2 P R / (P + R)``; NaN if undefined."""
        p, r = self.precision, self.recall
        if np.isnan(p) or np.isnan(r):
            return float("nan")
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def error(self) -> float:
        """Rand error, ``1 - f_score``."""
        return 1.0 - self.f_score


def rand_scores(
    truth_segments: np.ndarray, predicted_segments: np.ndarray, /, *, foreground_restricted: bool = True
) -> RandScores:
    """Rand precision and recall, as in the ISBI 2012 EM challenge.

    See :func:`rand_error` for the definition and conventions.

    Returns
    -------
    RandScores
        NaN precision and recall if there is nothing to score (no ground-truth
        foreground with ``foreground_restricted``, or an empty image).
    """
    t, p, n = _contingency(truth_segments, predicted_segments)
    n = n.astype(np.float64)
    if foreground_restricted:
        in_truth = t != 0
        t, p, n = t[in_truth], p[in_truth], n[in_truth]
        if n.sum() == 0:
            return RandScores(float("nan"), float("nan"))
        # every predicted-background pixel inside the ground-truth foreground
        # is a segment of its own: it adds 1 to sum p_ij^2 and to sum t_j^2
        singles = float(n[p == 0].sum())
        labelled = p != 0
        sum_joint = float(n[labelled] @ n[labelled]) + singles
        sum_truth = _sum_squared_marginal(t, n)  # s_i: rows include predicted background
        sum_pred = _sum_squared_marginal(p[labelled], n[labelled]) + singles
    else:
        if n.sum() == 0:
            return RandScores(float("nan"), float("nan"))
        sum_joint = float(n @ n)
        sum_truth = _sum_squared_marginal(t, n)
        sum_pred = _sum_squared_marginal(p, n)
    return RandScores(precision=sum_joint / sum_pred, recall=sum_joint / sum_truth)


def rand_error(
    truth_segments: np.ndarray, predicted_segments: np.ndarray, /, *, foreground_restricted: bool = True
) -> float:
    """Rand error, ``1 - Rand F-score``, of the ISBI 2012 EM segmentation challenge.

    Parameters
    ----------
    truth_segments : numpy.ndarray
        Ground-truth segments, integer labels of any shape; 0 is background
        (for EM: the membranes), every other value one segment (for EM: the
        connected components of the cell interiors).
    predicted_segments : numpy.ndarray
        Predicted segments, integer labels shaped like ``truth_segments``;
        0 is background.
    foreground_restricted : bool
        Score only the pixels that are foreground (non-zero) in the ground
        truth, as the challenge does. ``False`` scores every pixel and treats
        label 0 as one ordinary segment in both images.

    Returns
    -------
    float
        0 for a perfect segmentation, up to 1; NaN if there is nothing to
        score (no ground-truth foreground).

    Notes
    -----
    With :math:`p_{ij}` the number of pixels that carry truth label *i* and
    predicted label *j* (the contingency table), :math:`s_i = \\sum_j p_{ij}`
    and :math:`t_j = \\sum_i p_{ij}` its marginals::

        precision = sum_ij p_ij^2 / sum_j t_j^2     (merges lower it)
        recall    = sum_ij p_ij^2 / sum_i s_i^2     (splits lower it)
        error     = 1 - 2 P R / (P + R)

    This is the "foreground-restricted Rand index with N^2 normalisation" of
    the challenge's Fiji evaluation (``RandError.foregroundRestrictedStatsN2``
    in Trainable Weka Segmentation; Arganda-Carreras et al. 2015, Front.
    Neuroanat. 9:142). Its conventions, followed exactly here:

    - Only pixels with truth label != 0 enter the table (the truth row 0 is
      dropped), so anything the prediction does on ground-truth background
      (e.g. on membranes) costs nothing.
    - A pixel that the prediction labels 0 inside the ground-truth foreground
      is a **segment of its own** (a singleton): it adds 1 to
      :math:`\\sum p_{ij}^2` and to :math:`\\sum t_j^2`, and stays in its truth
      row's :math:`s_i`. Predicted background therefore never merges anything
      but splits every object it touches (it lowers recall).
    - Pairs are ordered and include a pixel with itself (:math:`N^2`, not
      :math:`N(N-1)/2`), which is what the sums of squares count.

    The challenge binarises a membrane probability map at thresholds 0.0, 0.1,
    ..., 1.0, takes 4-connected components of both images and reports the
    lowest error over the thresholds; this function scores one given pair of
    segmentations (take the connected components yourself).

    Examples
    --------
    One object split in two halves: precision 1, recall 1/2, error 1/3.

    >>> truth = np.array([[1, 1, 1, 1]])
    >>> round(rand_error(truth, np.array([[1, 1, 2, 2]])), 4)
    0.3333
    >>> rand_error(truth, np.array([[5, 5, 5, 5]]))
    0.0
    """
    return rand_scores(truth_segments, predicted_segments, foreground_restricted=foreground_restricted).error


def pixel_error(truth_mask: np.ndarray, predicted_mask: np.ndarray, /) -> float:
    """Fraction of pixels where two binary masks disagree.

    Parameters
    ----------
    truth_mask, predicted_mask : numpy.ndarray
        Masks of the same shape, any dtype; non-zero is foreground (so 0/1,
        0/255 and boolean masks compare alike).

    Returns
    -------
    float
        In [0, 1]; NaN for empty arrays.

    Notes
    -----
    The ISBI 2012 challenge's pixel error (the Hamming distance over the
    number of pixels). The challenge also minimises it over binarisation
    thresholds of a probability map; this function scores one given mask.

    Examples
    --------
    >>> pixel_error(np.array([0, 1, 1, 1]), np.array([0, 1, 0, 255]))
    0.25
    """
    t = np.asarray(truth_mask)
    p = np.asarray(predicted_mask)
    check_same_shape(t, p, "the two masks")
    if t.size == 0:
        return float("nan")
    return float(np.count_nonzero((t != 0) != (p != 0)) / t.size)


def _true_positives(iou: np.ndarray, thresholds: tuple[float, ...]) -> list[int]:
    """Matches with IoU > threshold, one-to-one, for each threshold (as :func:`match_objects`)."""
    if iou.size == 0:
        return [0] * len(thresholds)
    assigned = None
    counts = []
    for threshold in thresholds:
        if threshold >= 0.5:
            counts.append(int((iou > threshold).sum()))
        else:
            if assigned is None:
                from scipy.optimize import linear_sum_assignment

                rows, cols = linear_sum_assignment(-iou)
                assigned = iou[rows, cols]
            counts.append(int((assigned > threshold).sum()))
    return counts


def average_precision_table(
    truth: np.ndarray | Sequence[np.ndarray],
    predicted: np.ndarray | Sequence[np.ndarray],
    /,
    *,
    thresholds: Sequence[float] = AP_THRESHOLDS,
) -> list[MatchScores]:
    """Object matching scores at several IoU thresholds, over one image or a data set.

    Parameters
    ----------
    truth, predicted : numpy.ndarray or sequence of numpy.ndarray
        Instance labels (0 = background, one ID per object). One array is one
        image (of any dimension); a list or tuple holds several images,
        which may differ in size, paired in order.
    thresholds : sequence of float
        IoU thresholds; by default 0.5, 0.55, ..., 0.9.

    Returns
    -------
    list of MatchScores
        One per threshold, in the given order; ``average_precision`` is
        TP / (TP + FP + FN), ``f1`` is 2 TP / (2 TP + FP + FN).

    Notes
    -----
    Over several images, TP, FP and FN are **summed** over the images before
    the scores are formed, as StarDist's ``matching_dataset`` does (with
    ``by_image=False``): every object weighs the same, and an image with a
    few objects cannot swing the result. The IoU matrix of each image is
    computed once for all thresholds. Matching follows :func:`match_objects`
    (a match needs IoU strictly above the threshold). Use
    :func:`pool_match_scores` to add up tables computed image by image.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 2, 2]])
    >>> pred = np.array([[1, 1, 0, 2, 2, 2, 0]])   # second object has IoU 0.75
    >>> [(s.threshold, s.tp, s.fp, s.fn) for s in average_precision_table(truth, pred, thresholds=(0.5, 0.8))]
    [(0.5, 2, 0, 0), (0.8, 1, 1, 1)]
    """
    thresholds = tuple(float(t) for t in thresholds)
    if isinstance(truth, np.ndarray) or isinstance(predicted, np.ndarray):
        pairs = [(np.asarray(truth), np.asarray(predicted))]
    else:
        if len(truth) != len(predicted):
            raise ValueError(f"got {len(truth)} ground-truth images but {len(predicted)} predictions")
        pairs = list(zip(truth, predicted))
    tp = np.zeros(len(thresholds), np.int64)
    n_truth = n_pred = 0
    for t, p in pairs:
        t, p = np.asarray(t), np.asarray(p)
        check_same_shape(t, p, "ground truth and prediction")
        iou, t_ids, p_ids = iou_matrix(t, p)
        tp += np.asarray(_true_positives(iou, thresholds), np.int64)
        n_truth += len(t_ids)
        n_pred += len(p_ids)
    return [MatchScores(th, int(k), n_pred - int(k), n_truth - int(k)) for th, k in zip(thresholds, tp)]


def pool_match_scores(tables: Iterable[Sequence[MatchScores]], /) -> list[MatchScores]:
    """Add up per-image tables of :func:`average_precision_table` (TP, FP, FN summed).

    Raises
    ------
    ValueError
        If the tables have different thresholds, or there are none.

    Examples
    --------
    >>> a = [MatchScores(0.5, 2, 0, 1)]; b = [MatchScores(0.5, 1, 3, 0)]
    >>> pool_match_scores([a, b])
    [MatchScores(threshold=0.5, tp=3, fp=3, fn=1)]
    """
    tables = [list(t) for t in tables]
    if not tables:
        raise ValueError("no tables to pool")
    thresholds = [s.threshold for s in tables[0]]
    for table in tables[1:]:
        if [s.threshold for s in table] != thresholds:
            raise ValueError("the tables were computed at different thresholds")
    return [
        MatchScores(th, sum(t[k].tp for t in tables), sum(t[k].fp for t in tables), sum(t[k].fn for t in tables))
        for k, th in enumerate(thresholds)
    ]


@dataclass(frozen=True)
class SegScore:
    """Cell Tracking Challenge SEG measure, kept as a sum so that it pools.

    Attributes
    ----------
    total : float
        Sum over the ground-truth objects of their Jaccard index (IoU) with
        the matching predicted object (0 where none matches).
    count : int
        Number of ground-truth objects scored.
    """

    total: float
    count: int

    @property
    def score(self) -> float:
        """Mean Jaccard index per ground-truth object, SEG; NaN if there are no objects."""
        return self.total / self.count if self.count else float("nan")

    def __add__(self, other: SegScore) -> SegScore:
        if not isinstance(other, SegScore):
            return NotImplemented
        return SegScore(self.total + other.total, self.count + other.count)


def seg_measure(truth: np.ndarray, predicted: np.ndarray, /) -> SegScore:
    """The Cell Tracking Challenge SEG measure of one image.

    Parameters
    ----------
    truth : numpy.ndarray
        Ground-truth instance labels, any shape; 0 = background (or not
        annotated), every other value one annotated object.
    predicted : numpy.ndarray
        Predicted instance labels, same shape; 0 = background.

    Returns
    -------
    SegScore
        ``.score`` is SEG of this image; ``sum(scores, SegScore(0, 0))`` pools
        several images (the challenge averages over every ground-truth object
        of a data set, not per image).

    Notes
    -----
    A ground-truth object *R* is matched by the predicted object *S* with
    :math:`|R \\cap S| > 0.5\\,|R|` (there can be at most one), and scores the
    Jaccard index :math:`|R \\cap S| / |R \\cup S|`; with no such *S* it scores
    0 (Maška et al. 2014; Ulman et al. 2017). An object covered by exactly
    half scores 0. Only ground-truth objects are scored, so predicted
    objects where the ground truth has none cost nothing: SEG works
    unchanged on sparsely annotated frames, but ignores false positives
    (report it next to a detection score).

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 3, 0, 0, 4, 0]])   # 3/4 of object 1, half of object 2
    >>> s = seg_measure(truth, pred)
    >>> s.total, s.count, s.score
    (0.75, 2, 0.375)
    """
    t, p, n = _contingency(truth, predicted)
    truth_ids = np.unique(t[t != 0])
    if truth_ids.size == 0:
        return SegScore(0.0, 0)
    # object areas from the table itself: the summed counts of each label's pairs
    _, t_inv = np.unique(t, return_inverse=True)
    _, p_inv = np.unique(p, return_inverse=True)
    area_t = np.bincount(t_inv.ravel(), weights=n)[t_inv.ravel()]
    area_p = np.bincount(p_inv.ravel(), weights=n)[p_inv.ravel()]
    match = (t != 0) & (p != 0) & (2 * n > area_t)
    jaccard = n[match] / (area_t[match] + area_p[match] - n[match])
    return SegScore(float(jaccard.sum()), int(truth_ids.size))


def restrict_to_annotated(truth: np.ndarray, predicted: np.ndarray, /, *, min_fraction: float = 0.0) -> np.ndarray:
    """Drop the predicted objects that touch no annotated ground-truth object.

    For sparsely annotated frames (e.g. Cell Tracking Challenge frames where
    only some cells are labelled, the rest being 0 like the background), so
    that detections of unannotated cells are not counted as false positives.

    Parameters
    ----------
    truth : numpy.ndarray
        Sparse ground-truth instance labels; 0 = background or not annotated.
    predicted : numpy.ndarray
        Predicted instance labels, same shape.
    min_fraction : float
        A predicted object is kept if **more than** this fraction of its
        pixels lies on annotated objects. The default 0 keeps every predicted
        object with at least one pixel on an annotated object.

    Returns
    -------
    numpy.ndarray
        A copy of ``predicted`` with the other objects set to 0.

    Notes
    -----
    Scores such as :func:`average_precision_table` on the restricted
    prediction count every annotated object that was missed or badly
    segmented (FN), and every predicted object that overlaps an annotated
    one without matching it (FP: splits, merges, bad outlines), but no
    detection that lies wholly on unannotated pixels. The price: a wrong
    detection far from any annotated object goes unpunished too, and with
    ``min_fraction=0`` a detection of an unannotated cell that touches an
    annotated one by a few boundary pixels still counts as a false
    positive; raise ``min_fraction`` (e.g. to 0.5) to forgive that. The
    SEG measure needs no restriction (:func:`seg_measure` only scores
    ground-truth objects).

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 0, 0, 0]])
    >>> pred = np.array([[4, 4, 4, 0, 5, 5]])
    >>> restrict_to_annotated(truth, pred)
    array([[4, 4, 4, 0, 0, 0]])
    """
    t = np.asarray(truth)
    p = np.asarray(predicted)
    check_same_shape(t, p, "ground truth and prediction")
    ids, inverse = np.unique(p.ravel(), return_inverse=True)
    inverse = inverse.ravel()
    area = np.bincount(inverse, minlength=len(ids))
    on_truth = np.bincount(inverse, weights=(t.ravel() != 0), minlength=len(ids))
    keep = (on_truth > min_fraction * area) & (on_truth > 0) & (ids != 0)
    return np.where(keep[inverse].reshape(p.shape), p, 0).astype(p.dtype, copy=False)
