"""Metrics on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.training.metrics import class_iou, iou_matrix, match_objects


def test_class_iou_known_values():
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    iou = class_iou(truth, pred, n_classes=3)
    assert iou[0] == pytest.approx(1 / 2)
    assert iou[1] == pytest.approx(2 / 3)
    assert np.isnan(iou[2])


def test_class_iou_ignores_masked_pixels():
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    iou = class_iou(truth, pred, n_classes=2, ignore=np.array([[False, True, False, False]]))
    assert iou.tolist() == [1.0, 1.0]


def test_iou_matrix_of_two_overlapping_squares():
    truth = np.zeros((4, 4), int)
    truth[:2, :2] = 3
    pred = np.zeros((4, 4), int)
    pred[:2, :1] = 8
    iou, t_ids, p_ids = iou_matrix(truth, pred)
    assert t_ids.tolist() == [3] and p_ids.tolist() == [8]
    assert iou[0, 0] == pytest.approx(2 / 4)


def test_match_objects_counts_hits_misses_and_extras():
    truth = np.zeros((10, 10), int)
    truth[0:3, 0:3] = 1
    truth[5:8, 5:8] = 2
    pred = np.zeros((10, 10), int)
    pred[0:3, 0:3] = 4  # perfect match
    pred[5:6, 5:6] = 5  # too small: IoU 1/9
    pred[9, 9] = 6  # false positive
    s = match_objects(truth, pred, threshold=0.5)
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.f1 == pytest.approx(2 / (2 + 2 + 1))
    assert s.average_precision == pytest.approx(1 / 4)
    low = match_objects(truth, pred, threshold=0.1)
    assert low.tp == 2


def test_empty_images_score_zero_without_errors():
    s = match_objects(np.zeros((3, 3), int), np.zeros((3, 3), int))
    assert (s.tp, s.fp, s.fn) == (0, 0, 0)
