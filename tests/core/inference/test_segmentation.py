"""Segmenting whole images: layouts, stacks, dtypes, progress, stopping and out-of-memory."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from core_helpers import dots_image, drain, threshold_model, tiny_model
from napari_unet.core import Progress, segment, segment_job
from napari_unet.core.inference.layout import ImageLayoutError
from napari_unet.core.inference.predict import OutOfMemoryError


def _probs(image, model, **options):
    return segment(image, model, output="probabilities", device="cpu", **options).probabilities


@pytest.fixture(scope="module")
def gray_model():
    return tiny_model(padding="same", depth=2, base_features=4, seed=11)


@pytest.fixture(scope="module")
def valid_model():
    return tiny_model(padding="valid", depth=2, base_features=4, seed=12)


@pytest.fixture(scope="module")
def rgb_model():
    return tiny_model(padding="same", depth=2, base_features=4, seed=13, in_channels=3)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((40, 52)).astype(np.float32)


# --- 2-D, colour and multichannel images -------------------------------------------------------


def test_grayscale_2d_probabilities_shape_and_sum(gray_model, image):
    probs = _probs(image, gray_model)
    assert probs.shape == (3, 40, 52) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_rgb_image_with_grayscale_model_uses_luminance(gray_model):
    rgb = np.random.default_rng(1).random((40, 52, 3)).astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(_probs(rgb, gray_model, rgb=True), _probs(luma, gray_model), atol=1e-5)


def test_rgba_image_with_grayscale_model_ignores_alpha(gray_model):
    rgba = np.random.default_rng(2).random((40, 52, 4)).astype(np.float32)
    np.testing.assert_allclose(
        _probs(rgba, gray_model, rgb=True), _probs(rgba[..., :3].copy(), gray_model, rgb=True), atol=1e-6
    )


def test_rgb_image_with_three_channel_model_uses_the_colours(rgb_model):
    rgb = np.random.default_rng(3).random((40, 52, 3)).astype(np.float32)
    as_rgb = _probs(rgb, rgb_model, rgb=True)
    channels_first = _probs(np.moveaxis(rgb, -1, 0).copy(), rgb_model, channel_axis=0)
    np.testing.assert_allclose(as_rgb, channels_first, atol=1e-6)
    # the colours matter: swapping them changes the result
    assert np.abs(_probs(rgb[..., ::-1].copy(), rgb_model, rgb=True) - as_rgb).max() > 1e-3


@pytest.mark.parametrize("axis", [0, -1, 2])
def test_multichannel_channel_axis_anywhere(rgb_model, axis):
    channels_last = np.random.default_rng(4).random((40, 52, 3)).astype(np.float32)
    reference = _probs(channels_last, rgb_model, channel_axis=-1)
    image = np.moveaxis(channels_last, -1, axis).copy()
    probs = _probs(image, rgb_model, channel_axis=axis)
    assert probs.shape == (3, 40, 52)
    np.testing.assert_allclose(probs, reference, atol=1e-6)


def test_multichannel_axis_is_found_when_unambiguous(rgb_model):
    image = np.random.default_rng(5).random((3, 40, 52)).astype(np.float32)
    np.testing.assert_allclose(_probs(image, rgb_model), _probs(image, rgb_model, channel_axis=0), atol=0)


# --- stacks ----------------------------------------------------------------------------------


def test_stack_gives_per_plane_results(gray_model):
    stack = np.random.default_rng(6).random((3, 40, 52)).astype(np.float32)
    probs = _probs(stack, gray_model)
    assert probs.shape == (3, 3, 40, 52)
    for z in range(3):
        np.testing.assert_allclose(probs[z], _probs(stack[z], gray_model), atol=1e-6)


def test_multichannel_stack_with_channels_between_stack_and_plane(rgb_model):
    stack = np.random.default_rng(17).random((2, 3, 24, 28)).astype(np.float32)  # (Z, C, Y, X)
    probs = _probs(stack, rgb_model, channel_axis=1)
    assert probs.shape == (2, 3, 24, 28)
    for z in range(2):
        np.testing.assert_allclose(probs[z], _probs(stack[z], rgb_model, channel_axis=0), atol=1e-6)


def test_rgb_stack_with_grayscale_model(gray_model):
    stack = np.random.default_rng(18).random((2, 24, 28, 3)).astype(np.float32)
    probs = _probs(stack, gray_model, rgb=True)
    assert probs.shape == (2, 3, 24, 28)
    np.testing.assert_allclose(probs[1], _probs(stack[1], gray_model, rgb=True), atol=1e-6)


def test_stack_reports_progress_once_per_plane(gray_model):
    stack = np.random.default_rng(7).random((4, 24, 24)).astype(np.float32)
    reports, result = drain(segment_job(stack, gray_model, output="classes", device="cpu"))
    planes = [r for r in reports if r.stage == "plane"]
    assert len(planes) == 4
    assert all(r.n_planes == 4 for r in planes)
    assert planes[-1].fraction == 1.0
    assert all(isinstance(r, Progress) for r in reports)
    assert result.labels.shape == (4, 24, 24)


def test_progress_fraction_never_decreases(gray_model):
    stack = np.random.default_rng(8).random((3, 40, 40)).astype(np.float32)
    reports, _ = drain(segment_job(stack, gray_model, output="classes", device="cpu", tile_size=48))
    fractions = [round(r.fraction, 4) for r in reports if r.stage in ("tiles", "plane")]
    assert len(fractions) > 6
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), f"progress goes back: {fractions}"
    assert fractions[-1] == 1.0


def test_instance_ids_are_unique_across_planes():
    model = threshold_model()
    plane = dots_image(2, 3)  # six separate squares
    stack = np.stack([plane, plane, plane])
    result = segment(stack, model, output="instances", device="cpu")
    assert result.n_objects == 18
    ids = [set(np.unique(result.labels[z])) - {0} for z in range(3)]
    assert all(len(s) == 6 for s in ids)
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert set.union(*ids) == set(range(1, 19))


def test_instances_follow_the_objects():
    model = threshold_model()
    plane = dots_image(2, 3, size=3)
    labels = segment(plane, model, output="instances", device="cpu").labels
    np.testing.assert_array_equal(labels > 0, plane > 0.5)


def test_dask_input_gives_the_same_as_numpy(gray_model):
    stack = np.random.default_rng(9).random((2, 40, 52)).astype(np.float32)
    lazy = da.from_array(stack, chunks=(1, 16, 16))
    np.testing.assert_allclose(_probs(lazy, gray_model), _probs(stack, gray_model), atol=1e-6)


def test_dask_rgb_input_gives_the_same_as_numpy(gray_model):
    rgb = (np.random.default_rng(10).random((40, 52, 3)) * 255).astype(np.uint8)
    lazy = da.from_array(rgb, chunks=(16, 16, 3))
    np.testing.assert_allclose(_probs(lazy, gray_model, rgb=True), _probs(rgb, gray_model, rgb=True), atol=1e-6)


# --- dtypes and odd values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [
        np.uint8,
        np.uint16,
        np.uint32,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
    ],
)
def test_every_pixel_dtype_works(gray_model, dtype):
    raw = np.random.default_rng(11).random((30, 34))
    if dtype == np.bool_:
        image = raw > 0.5
    elif np.issubdtype(dtype, np.signedinteger):
        image = (raw * 200 - 100).astype(dtype)  # negative values too
    elif np.issubdtype(dtype, np.integer):
        image = (raw * 200).astype(dtype)
    else:
        image = raw.astype(dtype)
    probs = _probs(image, gray_model)
    assert probs.shape == (3, 30, 34)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_integer_image_matches_its_float_copy(gray_model):
    image = (np.random.default_rng(12).random((30, 34)) * 1000).astype(np.uint16)
    np.testing.assert_allclose(_probs(image, gray_model), _probs(image.astype(np.float64), gray_model), atol=1e-5)


def test_nan_and_inf_pixels_give_finite_probabilities(gray_model, image):
    bad = image.copy()
    bad[5, 5] = np.nan
    bad[10, 20] = np.inf
    bad[30, 40] = -np.inf
    bad[0, :] = np.nan
    probs = _probs(bad, gray_model)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_all_nan_image_gives_finite_probabilities(gray_model):
    assert np.isfinite(_probs(np.full((20, 20), np.nan, np.float32), gray_model)).all()


def test_constant_image_works(gray_model):
    probs = _probs(np.full((30, 30), 7, np.uint16), gray_model)
    assert np.isfinite(probs).all()
    # a constant image gives the same answer everywhere away from the borders
    assert np.ptp(probs[:, 10:20, 10:20]) < 1e-5


def test_complex_image_is_refused(gray_model):
    with pytest.raises(ValueError, match="cannot be segmented"):
        segment(np.zeros((8, 8), np.complex64), gray_model, device="cpu")


# --- output kinds ----------------------------------------------------------------------------


def test_classes_output_is_uint8(gray_model, image):
    result = segment(image, gray_model, output="classes", device="cpu")
    assert result.labels.dtype == np.uint8
    assert result.probabilities is None
    np.testing.assert_array_equal(result.labels, _probs(image, gray_model).argmax(axis=0))


def test_instances_output_is_uint8_for_few_objects():
    result = segment(dots_image(2, 2), threshold_model(), output="instances", device="cpu")
    assert result.n_objects == 4
    assert result.labels.dtype == np.uint8


def test_instances_output_is_uint16_for_more_than_255_objects():
    result = segment(dots_image(16, 17), threshold_model(), output="instances", device="cpu")
    assert result.n_objects == 272
    assert result.labels.dtype == np.uint16
    assert int(result.labels.max()) == 272


def test_keep_probabilities_returns_both(gray_model, image):
    result = segment(image, gray_model, output="classes", keep_probabilities=True, device="cpu")
    assert result.labels is not None and result.probabilities is not None
    np.testing.assert_array_equal(result.labels, result.probabilities.argmax(axis=0))


def test_unknown_output_kind_is_refused(gray_model, image):
    with pytest.raises(ValueError, match="output_kind must be one of"):
        segment(image, gray_model, output="masks", device="cpu")


def test_result_reports_class_names_and_device(gray_model, image):
    result = segment(image, gray_model, output="classes", device="cpu")
    assert result.class_names == ["background", "interior", "boundary"]
    assert result.device == "cpu"
    assert result.seconds >= 0


# --- stopping early ---------------------------------------------------------------------------


def test_closing_the_job_after_the_first_progress_is_clean(gray_model):
    stack = np.random.default_rng(13).random((3, 40, 40)).astype(np.float32)
    before = stack.copy()
    weights = {k: v.clone() for k, v in gray_model.network.state_dict().items()}
    job = segment_job(stack, gray_model, output="instances", device="cpu", tile_size=48)
    first = next(job)
    assert isinstance(first, Progress)
    job.close()  # raises nothing
    with pytest.raises(StopIteration):
        next(job)
    np.testing.assert_array_equal(stack, before)
    state = gray_model.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert not gray_model.network.training


# --- out of memory ---------------------------------------------------------------------------


def _oom_above(monkeypatch, model, limit):
    """Make the network raise CUDA out-of-memory for inputs with a side larger than ``limit``."""
    real = model.network.forward
    sizes = []

    def forward(x):
        sizes.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x)

    monkeypatch.setattr(model.network, "forward", forward)
    return sizes


def test_out_of_memory_retries_with_smaller_tiles_and_gives_the_same_result(monkeypatch):
    model = tiny_model(padding="valid", depth=2, base_features=4, seed=14)
    image = np.random.default_rng(14).random((150, 140)).astype(np.float32)
    expected = _probs(image, model, tile_size=256)
    sizes = _oom_above(monkeypatch, model, 128)
    reports, result = drain(segment_job(image, model, output="probabilities", device="cpu", tile_size=256))
    notices = [r for r in reports if r.stage == "notice"]
    assert notices and "out of memory" in notices[0].message
    assert max(sizes) > 128 and sizes[-1] <= 128  # it did try big tiles, then finished with small ones
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)


def test_out_of_memory_halves_the_batch_before_the_tiles(monkeypatch):
    model = tiny_model(padding="valid", depth=2, base_features=4, seed=15)
    image = np.random.default_rng(15).random((60, 60)).astype(np.float32)
    expected = _probs(image, model, tile_size=32, batch_size=1)
    real = model.network.forward

    def forward(x):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(x)

    monkeypatch.setattr(model.network, "forward", forward)
    reports, result = drain(segment_job(image, model, output="probabilities", device="cpu", tile_size=32, batch_size=8))
    assert any(r.stage == "notice" and "batch" in r.message for r in reports)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)


def test_out_of_memory_even_for_small_tiles_raises_a_clear_error(monkeypatch):
    model = tiny_model(padding="valid", depth=2, base_features=4, seed=16)
    _oom_above(monkeypatch, model, 0)
    image = np.random.default_rng(16).random((150, 150)).astype(np.float32)
    with pytest.raises(OutOfMemoryError, match="not enough memory"):
        segment(image, model, output="classes", device="cpu", tile_size=256)


def test_other_errors_are_not_retried(monkeypatch):
    model = tiny_model(padding="valid", depth=2, base_features=4, seed=17)

    def forward(x):
        raise ValueError("broken network")

    monkeypatch.setattr(model.network, "forward", forward)
    job = segment_job(np.zeros((40, 40), np.float32), model, output="classes", device="cpu", tile_size=256)
    with pytest.raises(ValueError, match="broken network"):
        drain(job)


# --- layout errors ---------------------------------------------------------------------------


def test_one_dimensional_image_is_refused(gray_model):
    with pytest.raises(ImageLayoutError, match="at least a 2-D"):
        segment(np.zeros(50, np.float32), gray_model, device="cpu")


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (3, 0, 10)])
def test_empty_image_is_refused(gray_model, shape):
    with pytest.raises(ImageLayoutError, match="empty.*open an image with pixels"):
        segment(np.zeros(shape, np.float32), gray_model, device="cpu")


def test_channel_count_mismatch_says_what_to_do(gray_model, rgb_model):
    with pytest.raises(ImageLayoutError, match="has 4 channels on axis 0, but this model expects 3; choose a model"):
        segment(np.zeros((4, 20, 20), np.float32), rgb_model, channel_axis=0, device="cpu")
    with pytest.raises(ImageLayoutError, match="has 2 channels on axis 2, but this model expects 1"):
        segment(np.zeros((20, 20, 2), np.float32), gray_model, channel_axis=-1, device="cpu")


def test_multichannel_image_without_channel_axis_asks_for_one(rgb_model):
    with pytest.raises(ImageLayoutError, match="say which axis"):
        segment(np.zeros((3, 20, 3), np.float32), rgb_model, device="cpu")


def test_a_gray_image_for_a_three_channel_model_says_it_has_no_channels(rgb_model):
    with pytest.raises(ImageLayoutError) as caught:
        segment(np.zeros((20, 20), np.float32), rgb_model, device="cpu")
    message = str(caught.value)
    assert "needs 3 channels and the image (shape (20, 20)) has none" in message
    assert "say which axis" not in message and "choose a model for one channel" in message


def test_a_stack_without_an_axis_of_as_many_channels_says_so(rgb_model):
    with pytest.raises(ImageLayoutError) as caught:
        segment(np.zeros((5, 20, 20), np.float32), rgb_model, device="cpu")
    assert "no axis of the image (shape (5, 20, 20)) has 3 entries" in str(caught.value)
    assert "say which axis" not in str(caught.value)


def test_rgb_flag_on_a_grayscale_image_is_refused(gray_model):
    with pytest.raises(ImageLayoutError, match="last axis of 3 or 4"):
        segment(np.zeros((20, 20), np.float32), gray_model, rgb=True, device="cpu")


def test_missing_channel_axis_is_refused(rgb_model):
    with pytest.raises(ImageLayoutError, match="does not exist"):
        segment(np.zeros((3, 20, 20), np.float32), rgb_model, channel_axis=3, device="cpu")


@pytest.mark.parametrize(("dtype", "low", "high"), [(np.uint32, 0, 4_000_000_000), (np.int64, -(10**12), 10**12)])
def test_wide_integer_values_match_their_float_copy(gray_model, dtype, low, high):
    image = np.random.default_rng(13).integers(low, high, size=(30, 34)).astype(dtype)
    np.testing.assert_allclose(_probs(image, gray_model), _probs(image.astype(np.float64), gray_model), atol=1e-5)


def test_five_dimensional_image_gives_one_result_per_plane(gray_model):
    image = np.random.default_rng(14).random((2, 2, 2, 24, 20)).astype(np.float32)
    result = segment(image, gray_model, output="classes", device="cpu")
    assert result.labels.shape == (2, 2, 2, 24, 20)
    plane = segment(image[1, 0, 1], gray_model, output="classes", device="cpu")
    np.testing.assert_array_equal(result.labels[1, 0, 1], plane.labels)


def test_five_dimensional_multichannel_image_drops_its_channel_axis(rgb_model):
    image = np.random.default_rng(15).random((2, 2, 3, 24, 20)).astype(np.float32)  # (T, Z, C, Y, X)
    result = segment(image, rgb_model, output="classes", channel_axis=2, device="cpu")
    assert result.labels.shape == (2, 2, 24, 20)


@pytest.mark.parametrize("shape", [(1, 37), (37, 1), (1, 1), (5, 7)])
def test_one_pixel_wide_and_smaller_than_a_tile_images_match_untiled(valid_model, shape):
    image = np.random.default_rng(16).random(shape).astype(np.float32)
    tiled = _probs(image, valid_model, tile_size=64)
    assert tiled.shape == (3, *shape)
    np.testing.assert_allclose(tiled, _probs(image, valid_model), atol=1e-5)
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)


def test_ambiguous_rgb_or_multichannel_image_asks_which_axis(rgb_model):
    image = np.zeros((3, 20, 3), np.float32)  # colours last (RGB) or first (channels)?
    with pytest.raises(ImageLayoutError, match="say which axis"):
        segment(image, rgb_model, device="cpu")
    assert segment(image, rgb_model, channel_axis=0, device="cpu").labels.shape == (20, 3)
    assert segment(image, rgb_model, rgb=True, device="cpu").labels.shape == (3, 20)


def test_inf_only_image_gives_finite_probabilities(gray_model):
    image = np.full((20, 22), np.inf, np.float32)
    image[::2] = -np.inf
    probs = _probs(image, gray_model)
    assert np.isfinite(probs).all()


# --------------------------------------------------------------------------- images larger than memory


def test_an_image_whose_results_do_not_fit_is_refused_before_any_work(gray_model, monkeypatch):
    from napari_unet.core.inference import budget, plane_outputs
    from napari_unet.core.inference.layout import infer_layout
    from napari_unet.core.io import memory

    image = np.zeros((512, 512), np.float32)
    needed = budget.whole_image_bytes(
        infer_layout(image.shape, in_channels=1), gray_model.config, output_kind="instances"
    )
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: needed - 1)
    called = []
    with monkeypatch.context() as patch:
        patch.setattr(plane_outputs, "predict_plane_job", lambda *a, **k: called.append(1))
        job = segment_job(image, gray_model, device="cpu")
        with pytest.raises(memory.ImageTooLargeError) as caught:
            next(job)
    assert called == []
    message = str(caught.value)
    assert "segmenting the image whole (512 x 512 pixels)" in message and "--block-size" in message

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: needed)
    assert segment(image[:64, :64], gray_model, device="cpu").labels.shape == (64, 64)


def test_the_estimate_grows_with_what_is_kept(gray_model):
    from napari_unet.core.inference.budget import whole_image_bytes
    from napari_unet.core.inference.layout import infer_layout

    layout = infer_layout((10, 256, 256), in_channels=1)
    sizes = {
        kind: whole_image_bytes(layout, gray_model.config, output_kind=kind)
        for kind in ("classes", "instances", "probabilities")
    }
    # ten planes of results: uint8 classes < uint32 objects < float32 probabilities of 3 classes
    assert sizes["classes"] < sizes["instances"] < sizes["probabilities"]
    kept = whole_image_bytes(layout, gray_model.config, output_kind="instances", keep_probabilities=True)
    assert kept - sizes["instances"] == 10 * 256 * 256 * 4 * gray_model.config.n_classes
