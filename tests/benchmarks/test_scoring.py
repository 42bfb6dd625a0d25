"""Accuracy-benchmark metrics (Rand error, pixel error, AP tables, SEG) on hand-made cases."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

import scoring
from napari_unet.core.training import metrics
from napari_unet.core.training.metrics import MatchScores, match_objects
from scoring import (
    AP_THRESHOLDS,
    SegScore,
    average_precision_table,
    pixel_error,
    pool_match_scores,
    rand_error,
    rand_scores,
    restrict_to_annotated,
    seg_measure,
)


def brute_force_rand_error(truth: np.ndarray, pred: np.ndarray) -> float:
    """Foreground-restricted Rand error by counting ordered pixel pairs one by one."""
    t = truth.ravel()
    p = pred.ravel().astype(np.int64)
    fg = t != 0
    t, p = t[fg], p[fg]
    # predicted background pixels are singletons: give each its own label
    p = np.where(p == 0, -1 - np.arange(p.size), p)
    same_t = same_p = same_both = 0
    for a, b in itertools.product(range(t.size), repeat=2):  # ordered pairs, self-pairs included
        st, sp = t[a] == t[b], p[a] == p[b]
        same_t += st
        same_p += sp
        same_both += st and sp
    precision, recall = same_both / same_p, same_both / same_t
    return 1 - 2 * precision * recall / (precision + recall)


# --- Rand error -------------------------------------------------------------


def test_rand_error_of_identical_segmentations_is_zero_whatever_the_ids():
    truth = np.array([[1, 1, 0, 2], [1, 1, 0, 2], [0, 0, 0, 2]])
    relabelled = np.where(truth == 1, 9, np.where(truth == 2, 4, 0))
    assert rand_error(truth, truth) == 0.0
    assert rand_error(truth, relabelled) == 0.0
    assert rand_error(truth, truth, foreground_restricted=False) == 0.0


def test_rand_error_of_a_split_object_is_one_third():
    # p_ij = [2, 2]: sum p^2 = 8, sum s^2 = 16, sum t^2 = 8 -> P = 1, R = 1/2, F = 2/3
    truth = np.array([[1, 1, 1, 1]])
    s = rand_scores(truth, np.array([[1, 1, 2, 2]]))
    assert (s.precision, s.recall) == (1.0, 0.5)
    assert rand_error(truth, np.array([[1, 1, 2, 2]])) == pytest.approx(1 / 3)


def test_rand_error_of_a_merge_is_one_third():
    # two objects of 2 pixels predicted as one: P = 8/16, R = 8/8
    truth = np.array([[1, 1, 2, 2]])
    s = rand_scores(truth, np.array([[3, 3, 3, 3]]))
    assert (s.precision, s.recall) == (0.5, 1.0)
    assert s.error == pytest.approx(1 / 3)


def test_predicted_background_inside_an_object_counts_as_singletons():
    # 2 pixels labelled, 2 predicted background (2 singletons):
    # sum p^2 = 4 + 2, sum t^2 = 4 + 2, sum s^2 = 16 -> P = 1, R = 6/16, F = 6/11
    truth = np.array([[1, 1, 1, 1]])
    s = rand_scores(truth, np.array([[7, 7, 0, 0]]))
    assert s.precision == 1.0
    assert s.recall == pytest.approx(6 / 16)
    assert s.error == pytest.approx(5 / 11)


def test_foreground_restriction_ignores_what_is_predicted_on_truth_background():
    truth = np.array([[1, 1, 0, 0, 2, 2]])
    pred = np.array([[1, 1, 1, 1, 2, 2]])  # object 1 bleeds over the membrane only
    assert rand_error(truth, pred) == 0.0
    assert rand_error(truth, pred, foreground_restricted=False) > 0


def test_rand_error_without_restriction_treats_zero_as_a_segment():
    # rows (truth 0, truth 1) = 2 px each, all predicted 0: P = 8/16, R = 8/8
    truth = np.array([[0, 0, 1, 1]])
    pred = np.zeros((1, 4), int)
    assert rand_error(truth, pred, foreground_restricted=False) == pytest.approx(1 / 3)


def test_rand_error_matches_pair_counting_on_random_segmentations():
    rng = np.random.default_rng(3)
    for _ in range(5):
        truth = rng.integers(0, 4, (5, 7))
        pred = rng.integers(0, 5, (5, 7))
        assert rand_error(truth, pred) == pytest.approx(brute_force_rand_error(truth, pred))


def test_rand_error_is_nan_without_truth_foreground():
    assert np.isnan(rand_error(np.zeros((3, 3), int), np.ones((3, 3), int)))


def test_rand_error_rejects_different_shapes():
    with pytest.raises(ValueError, match="same shape"):
        rand_error(np.zeros((3, 3), int), np.zeros((3, 4), int))


# --- pixel error ------------------------------------------------------------


def test_pixel_error_is_the_fraction_of_differing_pixels():
    truth = np.array([[0, 1, 1, 1]])
    assert pixel_error(truth, truth) == 0.0
    assert pixel_error(truth, np.array([[1, 1, 1, 1]])) == 0.25
    assert pixel_error(truth, 1 - truth) == 1.0


def test_pixel_error_compares_masks_as_foreground_or_not():
    assert pixel_error(np.array([0, 1, 1]), np.array([0, 255, 1])) == 0.0
    assert pixel_error(np.array([0, 1, 1]), np.array([False, True, False])) == pytest.approx(1 / 3)


# --- average precision table -------------------------------------------------


def test_default_thresholds_run_from_one_half_to_nine_tenths():
    assert AP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def test_ap_table_counts_per_threshold():
    truth = np.zeros((10, 10), int)
    truth[0:4, 0:4] = 1  # 16 px, predicted exactly
    truth[5:10, 5:10] = 2  # 25 px, predicted 15 px of it: IoU 0.6
    pred = np.zeros((10, 10), int)
    pred[0:4, 0:4] = 3
    pred[5:8, 5:10] = 4
    pred[9, 0] = 5  # a false positive
    table = average_precision_table(truth, pred)
    assert [s.threshold for s in table] == list(AP_THRESHOLDS)
    at = {s.threshold: s for s in table}
    assert (at[0.5].tp, at[0.5].fp, at[0.5].fn) == (2, 1, 0)
    assert at[0.5].average_precision == pytest.approx(2 / 3)
    assert at[0.5].f1 == pytest.approx(4 / 5)
    assert (at[0.6].tp, at[0.6].fp, at[0.6].fn) == (1, 2, 1)  # IoU must exceed the threshold
    assert at[0.9].average_precision == pytest.approx(1 / 4)


def test_ap_table_agrees_with_match_objects_at_every_threshold():
    rng = np.random.default_rng(0)
    truth = np.kron(rng.integers(0, 6, (6, 6)), np.ones((3, 3), int))
    pred = np.roll(truth, 1, axis=1)
    pred[pred == 2] = 0
    thresholds = (0.1, 0.3, 0.5, 0.6, 0.8)
    for s in average_precision_table(truth, pred, thresholds=thresholds):
        assert s == match_objects(truth, pred, threshold=s.threshold)


def test_ap_over_a_data_set_sums_counts_instead_of_averaging_images():
    one = np.zeros((4, 4), int)
    one[:2, :2] = 1
    many = np.zeros((4, 4), int)
    many[0, 0], many[2, 2], many[3, 0] = 1, 2, 3
    # image 1: AP 1 (1 TP); image 2: AP 0 (3 FN). Mean of images 0.5, pooled 1/4.
    table = average_precision_table([one, many], [one, np.zeros_like(many)], thresholds=(0.5,))
    assert (table[0].tp, table[0].fp, table[0].fn) == (1, 0, 3)
    assert table[0].average_precision == pytest.approx(1 / 4)
    per_image = [average_precision_table(t, p, thresholds=(0.5,)) for t, p in [(one, one), (many, 0 * many)]]
    assert pool_match_scores(per_image) == table


def test_ap_table_accepts_images_of_different_sizes():
    a = np.ones((3, 3), int)
    b = np.ones((5, 2), int)
    table = average_precision_table([a, b], [a, b], thresholds=(0.5,))
    assert (table[0].tp, table[0].fp, table[0].fn) == (2, 0, 0)


def test_ap_table_rejects_unpaired_lists():
    with pytest.raises(ValueError, match="2 ground-truth images but 1"):
        average_precision_table([np.ones((2, 2), int)] * 2, [np.ones((2, 2), int)])


def test_pooling_tables_of_different_thresholds_fails():
    with pytest.raises(ValueError, match="different thresholds"):
        pool_match_scores([[MatchScores(0.5, 1, 0, 0)], [MatchScores(0.7, 1, 0, 0)]])


# --- CTC SEG ------------------------------------------------------------------


def test_seg_of_a_half_covered_object_is_zero():
    truth = np.array([[1, 1, 1, 1]])
    assert seg_measure(truth, np.array([[2, 2, 0, 0]])).score == 0.0


def test_seg_of_an_object_covered_by_more_than_half_is_its_jaccard_index():
    truth = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[0, 2, 2, 2, 2, 0]])  # 3 of 4 covered, union 5
    s = seg_measure(truth, pred)
    assert (s.total, s.count) == (pytest.approx(3 / 5), 1)
    assert seg_measure(truth, truth).score == 1.0


def test_seg_ignores_false_positives_and_scores_misses_as_zero():
    truth = np.array([[1, 1, 0, 2, 2, 0, 0]])
    pred = np.array([[5, 5, 0, 0, 0, 6, 6]])
    s = seg_measure(truth, pred)
    assert (s.total, s.count, s.score) == (1.0, 2, 0.5)


def test_seg_of_a_merge_scores_each_object_against_the_merged_one():
    truth = np.array([[1, 1, 1, 2]])
    s = seg_measure(truth, np.array([[3, 3, 3, 3]]))
    assert s.total == pytest.approx(3 / 4 + 1 / 4)


def test_seg_pools_over_objects_not_images():
    a = seg_measure(np.array([[1, 1]]), np.array([[1, 1]]))  # 1 object, SEG 1
    b = seg_measure(np.array([[1, 2, 3]]), np.zeros((1, 3), int))  # 3 objects, SEG 0
    pooled = sum([a, b], SegScore(0.0, 0))
    assert (pooled.total, pooled.count, pooled.score) == (1.0, 4, 0.25)


def test_seg_without_truth_objects_has_no_score():
    s = seg_measure(np.zeros((2, 2), int), np.ones((2, 2), int))
    assert s.count == 0 and np.isnan(s.score)


# --- sparse ground truth -------------------------------------------------------


def test_restrict_to_annotated_drops_predictions_off_annotated_objects():
    truth = np.array([[1, 1, 0, 0, 0, 0, 0, 2]], np.uint16)
    pred = np.array([[4, 4, 4, 0, 5, 5, 0, 6]], np.uint32)
    kept = restrict_to_annotated(truth, pred)
    assert kept.tolist() == [[4, 4, 4, 0, 0, 0, 0, 6]]
    assert kept.dtype == np.uint32


def test_restrict_to_annotated_min_fraction_forgives_boundary_contact():
    truth = np.array([[1, 1, 1, 0, 0, 0]])
    pred = np.array([[1, 1, 2, 2, 2, 2]])  # object 2 has 1 of 4 pixels on object 1
    assert restrict_to_annotated(truth, pred).tolist() == [[1, 1, 2, 2, 2, 2]]
    assert restrict_to_annotated(truth, pred, min_fraction=0.5).tolist() == [[1, 1, 0, 0, 0, 0]]


def test_sparse_scoring_counts_errors_on_annotated_objects_only():
    truth = np.zeros((6, 12), int)
    truth[0:2, 0:2] = 1  # annotated, found
    truth[3:6, 0:3] = 2  # annotated, split in two by the prediction
    pred = np.zeros_like(truth)
    pred[0:2, 0:2] = 1
    pred[3:6, 0:1] = 2
    pred[3:6, 1:3] = 3
    pred[0:3, 8:11] = 4  # an unannotated cell: not a false positive
    s = average_precision_table(truth, restrict_to_annotated(truth, pred), thresholds=(0.5,))[0]
    assert (s.tp, s.fp, s.fn) == (2, 1, 0)


@pytest.mark.parametrize("module", [scoring, metrics], ids=["scoring", "metrics"])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1 and result.failed == 0
