"""Objects of neighbouring planes linked into one ID by overlap (Cellpose's stitch_threshold)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.core import load_named_model, segment
from napari_unet.core.network.stitching import StitchError, stitch_planes


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _drifting_nuclei(n_planes: int = 6, drift: float = 1.0) -> np.ndarray:
    """Two discs that drift a little from plane to plane, with IDs unique per plane (as Segment makes)."""
    stack = np.zeros((n_planes, 64, 64), np.uint16)
    for z in range(n_planes):
        stack[z][_disc((64, 64), (20 + drift * z, 20), 8)] = 2 * z + 1
        stack[z][_disc((64, 64), (45, 45 - drift * z), 6)] = 2 * z + 2
    return stack


def test_drifting_objects_keep_one_id_each():
    stitched = stitch_planes(_drifting_nuclei(), threshold=0.25)
    assert stitched.max() == 2 and stitched.dtype == np.uint8
    assert all(set(np.unique(plane)) == {0, 1, 2} for plane in stitched)
    assert (stitched > 0).sum() == (_drifting_nuclei() > 0).sum()  # no pixel gained or lost


def test_a_threshold_above_the_overlap_keeps_planes_apart():
    # discs of radius 8 drifting 4 px: IoU about 0.53
    stack = _drifting_nuclei(n_planes=3, drift=4.0)
    assert stitch_planes(stack, threshold=0.4).max() == 2
    assert stitch_planes(stack, threshold=0.9).max() == 6


def test_repeated_ids_between_planes_are_taken_per_plane():
    stack = np.zeros((3, 10, 10), np.uint8)
    stack[0, 2:5, 2:5] = 1
    stack[1, 6:9, 6:9] = 1  # same ID, another object: not linked by its ID
    stack[2, 6:9, 6:9] = 7
    stitched = stitch_planes(stack, threshold=0.5)
    assert stitched[0, 3, 3] != stitched[1, 7, 7] == stitched[2, 7, 7]
    assert stitched.max() == 2


def test_one_object_continues_into_at_most_one_object_of_the_next_plane():
    stack = np.zeros((2, 10, 20), np.uint8)
    stack[0, :, :10] = 1
    stack[1, :, :6] = 2  # IoU 0.6
    stack[1, :, 6:10] = 3  # IoU 0.4: also above the threshold, but 1 is taken
    stitched = stitch_planes(stack, threshold=0.3)
    assert stitched[1, 0, 0] == stitched[0, 0, 0] != stitched[1, 0, 8]
    assert stitched.max() == 2


def test_tzyx_stitches_z_within_each_frame_and_frames_stay_apart():
    frame = _drifting_nuclei(n_planes=4)
    tzyx = np.stack([frame, frame])  # the same objects in two frames
    stitched = stitch_planes(tzyx, threshold=0.25)  # axis -1: Z, the one before Y
    assert stitched.max() == 4
    assert set(np.unique(stitched[0])) == {0, 1, 2} and set(np.unique(stitched[1])) == {0, 3, 4}
    along_t = stitch_planes(tzyx, threshold=0.25, axis=0)  # asked for: T links, Z planes stay apart
    assert along_t.max() == 8 and np.array_equal(along_t[0], along_t[1])


@pytest.mark.parametrize(
    ("labels", "threshold", "axis", "message"),
    [
        (np.zeros((3, 8, 8), np.uint8), 0.0, 0, "IoU between 0 and 1"),
        (np.zeros((3, 8, 8), np.uint8), 1.5, 0, "IoU between 0 and 1"),
        (np.zeros((8, 8), np.uint8), 0.5, 0, "no stack axis"),
        (np.zeros((3, 8, 8), np.uint8), 0.5, 1, "1 stack axes, not axis 1"),
    ],
)
def test_unusable_thresholds_and_axes_are_named(labels, threshold, axis, message):
    with pytest.raises(StitchError, match=message):
        stitch_planes(labels, threshold=threshold, axis=axis)


def test_real_frames_are_linked_like_their_tracks(shared_data):
    """Five frames (3 apart) of Fluo-N2DH-SIM+, whose ground-truth IDs are track IDs, as a stack."""
    folder = shared_data / "ctc_fluo_n2dh_sim_plus" / "val" / "labels"
    truth = np.stack([tifffile.imread(f) for f in sorted(folder.glob("*.tif"))]).astype(np.int64)
    per_plane = np.where(truth > 0, truth + 1000 * np.arange(len(truth))[:, None, None], 0)  # IDs as Segment gives
    stitched = stitch_planes(per_plane, threshold=0.25)
    kept = links = 0
    for z in range(1, len(truth)):
        for track in np.unique(truth[z])[1:]:
            before = truth[z - 1] == track
            if before.any():
                links += 1
                now = np.bincount(stitched[z][truth[z] == track]).argmax()
                kept += now == np.bincount(stitched[z - 1][before]).argmax()
    assert links > 150 and kept / links >= 0.9  # measured: 161 of 168
    assert stitched.max() < len(np.unique(truth)) + 10 < (per_plane > 0).any(axis=(1, 2)).sum() * 40


def test_segment_links_the_planes_of_a_stack(nuclei_crop):
    image, _ = nuclei_crop
    stack = np.stack([image[:96, :96]] * 3)
    model = load_named_model("nuclei")
    plain = segment(stack, model, device="cpu", tile_size=96)
    linked = segment(stack, model, device="cpu", tile_size=96, stitch_threshold=0.5)
    per_plane = int(plain.labels[0].max())
    assert per_plane > 3 and plain.n_objects == 3 * per_plane
    assert linked.n_objects == per_plane and linked.labels.max() == per_plane
    assert np.array_equal(linked.labels[0], linked.labels[2])


def test_segment_refuses_stitching_a_single_plane_before_any_work(tiny_model):
    with pytest.raises(StitchError, match="no stack axis"):
        segment(np.zeros((32, 32), np.float32), tiny_model, device="cpu", stitch_threshold=0.25)
    with pytest.raises(StitchError, match="needs output_kind='instances'"):
        segment(np.zeros((2, 32, 32), np.float32), tiny_model, output_kind="classes", stitch_threshold=0.25)
