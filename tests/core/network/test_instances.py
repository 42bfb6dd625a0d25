"""From class probabilities to objects, on hand-made probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.network.instances import (
    InstanceRule,
    class_map,
    instances_from_probabilities,
    relabel_consecutive,
    smallest_label_dtype,
)

WATERSHED = InstanceRule(method="seeded_watershed", foreground_classes=[1, 2], seed_classes=[1])
COMPONENTS = InstanceRule(method="components", foreground_classes=[1, 2])


def _one_hot(classes: np.ndarray, n_classes: int, *, sure: float = 0.9) -> np.ndarray:
    """Probabilities (n_classes, Y, X) giving ``sure`` to the class in ``classes``."""
    other = (1 - sure) / (n_classes - 1)
    probs = np.full((n_classes, *classes.shape), other, np.float32)
    for c in range(n_classes):
        probs[c][classes == c] = sure
    return probs


def _touching_squares() -> np.ndarray:
    """Two 8x8 squares side by side: interiors (1) ringed by boundary (2), sharing one boundary column."""
    classes = np.zeros((12, 21), np.uint8)
    classes[2:10, 2:10] = 2
    classes[2:10, 9:17] = 2  # touches the first square: column 9 is shared boundary
    classes[3:9, 3:9] = 1
    classes[3:9, 10:16] = 1
    return classes


def test_touching_objects_separated_by_boundary_are_two_with_seeded_watershed():
    classes = _touching_squares()
    labels = instances_from_probabilities(_one_hot(classes, 3), WATERSHED)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, classes > 0)  # boundary pixels belong to objects too
    assert len(np.unique(labels[3:9, 3:9])) == 1 and len(np.unique(labels[3:9, 10:16])) == 1
    assert labels[5, 5] != labels[5, 12]


def test_each_object_keeps_its_own_boundary():
    labels = instances_from_probabilities(_one_hot(_touching_squares(), 3), WATERSHED)
    assert labels[5, 2] == labels[5, 5]  # outer boundary of the left square
    assert labels[5, 16] == labels[5, 12]  # outer boundary of the right square


def test_components_merge_touching_objects_that_seeded_watershed_separates():
    labels = instances_from_probabilities(_one_hot(_touching_squares(), 3), COMPONENTS)
    assert labels.max() == 1


def test_components_separate_objects_with_a_background_gap():
    classes = np.zeros((10, 20), np.uint8)
    classes[2:8, 2:8] = 1
    classes[2:8, 9:15] = 1  # one background column between them
    labels = instances_from_probabilities(_one_hot(classes, 2), InstanceRule(method="components"))
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, classes > 0)


def test_components_use_four_connectivity():
    classes = np.zeros((6, 6), np.uint8)
    classes[1:3, 1:3] = 1
    classes[3:5, 3:5] = 1  # touches the first square only at a corner
    labels = instances_from_probabilities(_one_hot(classes, 2), InstanceRule(method="components"))
    assert labels.max() == 2


def test_foreground_without_a_seed_is_not_an_object():
    # specks of boundary class (what a weak model paints on noise) must not become objects;
    # measured on DSB 2018 val: counting them dropped F1@0.5 from 0.73 to 0.59
    classes = np.zeros((12, 20), np.uint8)
    classes[3:6, 3:6] = 2  # boundary only, no interior seed
    classes[2:9, 10:17] = 2
    classes[4:7, 12:15] = 1  # a real object: interior inside its boundary
    labels = instances_from_probabilities(_one_hot(classes, 3), WATERSHED)
    assert labels.max() == 1
    assert (labels[3:6, 3:6] == 0).all()
    np.testing.assert_array_equal(labels[2:9, 10:17] > 0, True)


def test_min_size_removes_small_objects():
    classes = np.zeros((20, 20), np.uint8)
    classes[1:4, 1:4] = 1  # 9 px
    classes[8:18, 8:18] = 1  # 100 px
    rule = InstanceRule(method="components", min_size=20)
    labels = instances_from_probabilities(_one_hot(classes, 2), rule)
    assert labels.max() == 1
    assert (labels[1:4, 1:4] == 0).all()
    assert (labels[8:18, 8:18] == 1).all()


def test_min_size_keeps_objects_of_exactly_that_size():
    classes = np.zeros((10, 10), np.uint8)
    classes[1:5, 1:6] = 1  # 20 px
    labels = instances_from_probabilities(_one_hot(classes, 2), InstanceRule(method="components", min_size=20))
    assert labels.max() == 1


def test_min_size_with_seeded_watershed_removes_small_objects():
    classes = np.zeros((30, 30), np.uint8)
    classes[1:5, 1:5] = 2
    classes[2:4, 2:4] = 1  # a 16 px object
    classes[10:25, 10:25] = 2
    classes[11:24, 11:24] = 1  # a 225 px object
    rule = InstanceRule(method="seeded_watershed", foreground_classes=[1, 2], seed_classes=[1], min_size=30)
    labels = instances_from_probabilities(_one_hot(classes, 3), rule)
    assert labels.max() == 1
    assert (labels[1:5, 1:5] == 0).all()


def test_labels_are_consecutive_from_one():
    classes = np.zeros((10, 30), np.uint8)
    for x in range(1, 30, 4):
        classes[2:6, x : x + 2] = 1
    labels = instances_from_probabilities(_one_hot(classes, 2), InstanceRule(method="components"))
    assert sorted(np.unique(labels)) == list(range(0, 9))


def test_empty_prediction_gives_no_objects():
    labels = instances_from_probabilities(_one_hot(np.zeros((8, 8), np.uint8), 3), WATERSHED)
    assert labels.shape == (8, 8) and labels.max() == 0


def test_rule_naming_a_missing_class_is_refused():
    with pytest.raises(ValueError, match="names class 3"):
        instances_from_probabilities(_one_hot(np.zeros((4, 4), np.uint8), 3), InstanceRule(foreground_classes=[3]))


def test_rule_none_is_refused_with_advice():
    with pytest.raises(ValueError, match="ask for classes or probabilities"):
        instances_from_probabilities(np.zeros((2, 4, 4)), InstanceRule(method="none", foreground_classes=[]))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "watershed"}, "unknown instance method"),
        ({"method": "seeded_watershed", "seed_classes": []}, "at least one seed class"),
        ({"foreground_classes": []}, "at least one foreground class"),
        ({"min_size": -1}, "cannot be negative"),
    ],
)
def test_invalid_rules_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        InstanceRule(**options)


def test_rule_dict_round_trip():
    assert InstanceRule.from_dict(WATERSHED.to_dict()) == WATERSHED


def test_rule_dict_with_unknown_keys_is_refused():
    with pytest.raises(ValueError, match="unknown instance settings"):
        InstanceRule.from_dict({**WATERSHED.to_dict(), "sigma": 2})


# --- class_map -------------------------------------------------------------------------------


def test_class_map_is_the_most_likely_class():
    probs = np.zeros((3, 2, 2), np.float32)
    probs[0, 0, 0] = probs[1, 0, 1] = probs[2, 1, 0] = probs[2, 1, 1] = 1
    out = class_map(probs)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1], [2, 2]])


def test_class_map_of_many_classes_is_uint16():
    probs = np.zeros((300, 1, 1), np.float32)
    probs[299] = 1
    out = class_map(probs)
    assert out.dtype == np.uint16 and out[0, 0] == 299


# --- relabel_consecutive and dtypes -----------------------------------------------------------


def test_relabel_consecutive_renumbers_keeping_background():
    labels = np.array([[0, 5, 5], [9, 0, 42]])
    np.testing.assert_array_equal(relabel_consecutive(labels), [[0, 1, 1], [2, 0, 3]])


def test_relabel_consecutive_from_another_start():
    np.testing.assert_array_equal(relabel_consecutive(np.array([0, 7, 3]), start=10), [0, 11, 10])


def test_relabel_consecutive_of_background_only():
    out = relabel_consecutive(np.zeros((3, 3), np.uint16))
    assert out.max() == 0 and out.shape == (3, 3)


def test_relabel_consecutive_returns_int32():
    assert relabel_consecutive(np.array([0, 70000], np.uint32)).dtype == np.int32


def test_relabel_consecutive_handles_huge_ids_without_a_huge_table():
    # IDs are not bounded by the number of objects (e.g. hashed or 64-bit label images)
    labels = np.array([[0, 2**40], [7, 2**40]], np.int64)
    np.testing.assert_array_equal(relabel_consecutive(labels), [[0, 2], [1, 2]])


@pytest.mark.parametrize(
    "max_label, dtype",
    [
        (0, np.uint8),
        (255, np.uint8),
        (256, np.uint16),
        (65535, np.uint16),
        (65536, np.uint32),
        (2**32 - 1, np.uint32),
        (2**32, np.uint64),
    ],
)
def test_smallest_label_dtype_edges(max_label, dtype):
    assert smallest_label_dtype(max_label) == np.dtype(dtype)


def test_smallest_label_dtype_refuses_more_than_64_bits():
    with pytest.raises(ValueError, match="does not fit"):
        smallest_label_dtype(2**64)


def _two_cells_with_a_faint_membrane() -> np.ndarray:
    """Membrane (0) / cell (1) probabilities: two cells whose shared membrane is faint in the middle."""
    cell = np.full((20, 30), 0.95)
    cell[:, 14:16] = 0.05  # the membrane between them
    cell[8:12, 14:16] = 0.6  # a gap the network is unsure about
    cell[0, :] = cell[-1, :] = cell[:, 0] = cell[:, -1] = 0.05
    return np.stack([1 - cell, cell])


def test_seed_threshold_keeps_a_faint_membrane_from_merging_two_cells():
    probabilities = _two_cells_with_a_faint_membrane()
    merged = instances_from_probabilities(probabilities, InstanceRule("components", [1]))
    assert merged.max() == 1
    rule = InstanceRule("seeded_watershed", [1], [1], seed_threshold=0.9)
    separated = instances_from_probabilities(probabilities, rule)
    assert separated.max() == 2
    assert separated[10, 5] != separated[10, 25]
    assert (separated[probabilities[1] < 0.5] == 0).all()  # membranes stay 0


def test_a_faint_cell_needs_a_lower_seed_threshold_or_its_neighbour_takes_it_in():
    """The other way round (the Seeds field's advice): a faint cell has no seed above a high threshold."""
    background, interior, boundary = np.zeros((3, 20, 30))
    interior[:, :15], interior[:, 15:] = 0.95, 0.7  # the right-hand cell is faint
    interior[:, 14:16], boundary[:, 14:16] = 0.3, 0.6  # the membrane between them
    background[:] = 1 - interior - boundary
    edge = np.ones((20, 30), bool)
    edge[1:-1, 1:-1] = False
    background[edge], interior[edge], boundary[edge] = 0.9, 0.05, 0.05
    probabilities = np.stack([background, interior, boundary])
    high, low = (instances_from_probabilities(probabilities, WATERSHED.with_seed_threshold(t)) for t in (0.9, 0.5))
    assert high.max() == 1 and high[10, 5] == high[10, 25]  # taken in by its bright neighbour
    assert low.max() == 2 and low[10, 5] != low[10, 25]


def test_seed_threshold_round_trips_and_is_left_out_when_unset():
    rule = InstanceRule("seeded_watershed", [1], [1], seed_threshold=0.9)
    assert InstanceRule.from_dict(rule.to_dict()) == rule
    assert "seed_threshold" not in InstanceRule("seeded_watershed", [1, 2], [1]).to_dict()
    with pytest.raises(ValueError, match="seed_threshold"):
        InstanceRule("seeded_watershed", [1], [1], seed_threshold=1.5)


def test_foreground_threshold_shrinks_objects_to_the_confident_pixels():
    p = np.zeros((3, 9, 9), np.float32)
    p[0] = 1.0
    p[:, 1:8, 1:8] = np.array([0.3, 0.0, 0.7])[:, None, None]  # a wide, unsure ring of boundary
    p[:, 2:7, 2:7] = np.array([0.1, 0.0, 0.9])[:, None, None]
    p[:, 3:6, 3:6] = np.array([0.0, 1.0, 0.0])[:, None, None]
    wide = instances_from_probabilities(p, WATERSHED)
    tight = instances_from_probabilities(p, WATERSHED.with_foreground_threshold(0.8))
    assert (wide > 0).sum() == 49
    assert (tight > 0).sum() == 25
    assert tight.max() == wide.max() == 1
    tight_components = instances_from_probabilities(p, COMPONENTS.with_foreground_threshold(0.8))
    assert (tight_components > 0).sum() == 25


def test_foreground_threshold_round_trips_and_is_left_out_when_unset():
    rule = WATERSHED.with_foreground_threshold(0.75)
    assert InstanceRule.from_dict(rule.to_dict()) == rule
    assert "foreground_threshold" not in WATERSHED.to_dict()
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="foreground_threshold"):
            WATERSHED.with_foreground_threshold(bad)
    with pytest.raises(ValueError, match="foreground_threshold must be a number"):
        InstanceRule.from_dict({**WATERSHED.to_dict(), "foreground_threshold": "0.7"})


def test_with_seed_threshold_changes_only_the_seeds_and_refuses_rules_without_seeds():
    # one object whose interior is weak in the middle: two seeds by the most probable class
    probs = np.zeros((3, 6, 16), np.float32)
    probs[0] = 1.0
    probs[:, 1:5, 1:15] = np.array([0.0, 0.7, 0.3])[:, None, None]
    probs[:, 1:5, 7:9] = np.array([0.0, 0.45, 0.55])[:, None, None]  # boundary wins here...
    probs[:, 1:5, 2:4] = np.array([0.0, 0.95, 0.05])[:, None, None]  # ...and only one core is sure
    assert instances_from_probabilities(probs, WATERSHED).max() == 2

    sure_seeds = WATERSHED.with_seed_threshold(0.9)
    assert sure_seeds == InstanceRule("seeded_watershed", [1, 2], [1], seed_threshold=0.9)
    assert WATERSHED.seed_threshold is None  # the rule itself is unchanged
    one = instances_from_probabilities(probs, sure_seeds)
    assert one.max() == 1 and np.array_equal(one > 0, probs[1:].sum(axis=0) > 0.5)
    assert sure_seeds.with_seed_threshold(None) == WATERSHED
    with pytest.raises(ValueError, match="not grown from seeds"):
        COMPONENTS.with_seed_threshold(0.9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        WATERSHED.with_seed_threshold(1.0)
