"""Tests for napari_unet.core.training.losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.training.losses import dice_cross_entropy, masked_cross_entropy, soft_dice_loss


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Like ``torch.testing.assert_close`` for float32 scalars, without its 2 s first-call import cost."""
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-6), f"{actual.item()} != {expected.item()}"


LOSSES = {
    "masked_cross_entropy": masked_cross_entropy,
    "soft_dice_loss": soft_dice_loss,
    "dice_cross_entropy": dice_cross_entropy,
}


def _sparse_problem(seed: int = 0, *, n_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (2, C, 8, 10) and a target with about half the pixels unannotated."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, n_classes, 8, 10, generator=gen)
    target = torch.randint(0, n_classes, (2, 8, 10), generator=gen)
    unannotated = torch.rand(2, 8, 10, generator=gen) < 0.5
    return logits, torch.where(unannotated, torch.full_like(target, -1), target)


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_is_exactly_zero_at_unannotated_pixels(name):
    logits, target = _sparse_problem()
    logits.requires_grad_(True)
    LOSSES[name](logits, target).backward()
    grad = logits.grad.movedim(1, -1)  # (N, H, W, C)
    unannotated = target == -1
    assert unannotated.any() and (~unannotated).any()
    assert torch.all(grad[unannotated] == 0)
    assert grad[~unannotated].abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_unannotated_logits_do_not_change_the_loss(name):
    logits, target = _sparse_problem()
    changed = logits.clone()
    changed.movedim(1, -1)[target == -1] = torch.tensor([50.0, -50.0, 3.0])
    assert torch.equal(LOSSES[name](logits, target), LOSSES[name](changed, target))


@pytest.mark.parametrize("name", LOSSES)
def test_all_ignored_target_gives_connected_zero(name):
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    target = torch.full((2, 5, 5), -1)
    loss = LOSSES[name](logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)  # no NaN


def test_all_ignored_with_weights_gives_zero():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    weights = torch.full((1, 4, 4), float("nan"))  # unused at unannotated pixels
    loss = masked_cross_entropy(logits, torch.full((1, 4, 4), -1), weights=weights)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_unweighted_equals_torch_mean_over_annotated_pixels():
    logits, target = _sparse_problem(1)
    expected = F.cross_entropy(logits, target, ignore_index=-1)
    _assert_close(masked_cross_entropy(logits, target), expected)


def test_weights_give_a_weighted_mean():
    # two annotated pixels with known cross-entropies log(2) and -log(sigmoid(2))
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[0.0, 2.0, -5.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, -1]]])
    weights = torch.tensor([[[1.0, 3.0, 100.0]]])
    ce = torch.tensor([math.log(2), -math.log(torch.sigmoid(torch.tensor(2.0)).item())])
    expected = (1 * ce[0] + 3 * ce[1]) / 4
    _assert_close(masked_cross_entropy(logits, target, weights=weights), expected)


def test_scaling_all_weights_leaves_the_loss_unchanged():
    logits, target = _sparse_problem(2)
    weights = torch.rand(target.shape, generator=torch.Generator().manual_seed(3)) + 0.1
    base = masked_cross_entropy(logits, target, weights=weights)
    _assert_close(masked_cross_entropy(logits, target, weights=weights * 7.5), base)
    assert not torch.isclose(base, masked_cross_entropy(logits, target))  # but the weights matter


def test_zero_weight_acts_like_ignoring_the_pixel():
    logits, target = _sparse_problem(4)
    weights = torch.ones(target.shape)
    weights[0] = 0
    ignored_first = target.clone()
    ignored_first[0] = -1
    _assert_close(masked_cross_entropy(logits, target, weights=weights), masked_cross_entropy(logits, ignored_first))


def test_dice_is_near_zero_for_a_confident_correct_prediction_and_high_for_a_wrong_one():
    target = torch.tensor([[[0, 1, 1], [2, -1, 0]]])
    correct = 20 * F.one_hot(target.clamp_min(0), 3).movedim(-1, 1).float()
    wrong = 20 * F.one_hot((target.clamp_min(0) + 1) % 3, 3).movedim(-1, 1).float()
    assert soft_dice_loss(correct, target).item() < 1e-3
    assert soft_dice_loss(wrong, target).item() > 0.5


def test_dice_hand_computed_and_absent_classes_left_out():
    # uniform probabilities over 4 classes; only classes 0 and 1 are annotated
    logits = torch.zeros(1, 4, 1, 4)
    target = torch.tensor([[[0, 0, 1, -1]]])
    # class 0: I = 2 * 0.25, sum p = 3 * 0.25, sum y = 2; class 1: I = 0.25, sum p = 0.75, sum y = 1
    dice0 = (2 * 0.5 + 1) / (0.75 + 2 + 1)
    dice1 = (2 * 0.25 + 1) / (0.75 + 1 + 1)
    expected = 1 - (dice0 + dice1) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_cross_entropy_is_the_sum_of_its_terms():
    logits, target = _sparse_problem(5)
    weights = torch.rand(target.shape, generator=torch.Generator().manual_seed(6))
    combined = dice_cross_entropy(logits, target, weights=weights, dice_weight=0.5)
    expected = masked_cross_entropy(logits, target, weights=weights) + 0.5 * soft_dice_loss(logits, target)
    _assert_close(combined, expected)
    _assert_close(dice_cross_entropy(logits, target, dice_weight=0.0), masked_cross_entropy(logits, target))


def test_other_ignore_index():
    logits, target = _sparse_problem(7)
    relabelled = torch.where(target == -1, torch.full_like(target, 255), target)
    for loss in LOSSES.values():
        _assert_close(loss(logits, relabelled, ignore_index=255), loss(logits, target))


@pytest.mark.parametrize("name", LOSSES)
def test_shape_mismatch_raises(name):
    with pytest.raises(ValueError):
        LOSSES[name](torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.int64))


def test_weight_shape_mismatch_raises():
    with pytest.raises(ValueError):
        masked_cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64), weights=torch.ones(4, 4))


def test_float_target_raises():
    with pytest.raises(TypeError):
        masked_cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4))


@pytest.fixture
def one_thread():
    """Tiny networks train faster (and more reproducibly) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", LOSSES)
def test_sgd_on_sparse_scribbles_learns_the_task(name, one_thread):
    """A tiny conv net trained on ~10 % of the pixels segments the rest too."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = F.avg_pool2d(torch.rand(4, 1, 24, 24, generator=gen), 5, stride=1, padding=2)  # smooth blobs
    truth = (images[:, 0] > images.mean()).long()
    images = images + 0.02 * torch.randn(images.shape, generator=gen)
    images = (images - images.mean()) / images.std()
    scribbled = torch.rand(truth.shape, generator=gen) < 0.1
    target = torch.where(scribbled, truth, torch.full_like(truth, -1))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    loss_fn = LOSSES[name]
    with torch.no_grad():
        first = loss_fn(net(images), target).item()
    # plain SGD with momentum 0.9, as torch.optim.SGD does it (which would cost
    # a 2-6 s one-off import of torch._dynamo)
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    for _ in range(150):
        loss_fn(net(images), target).backward()
        with torch.no_grad():
            for p, v in zip(params, velocity, strict=True):
                v.mul_(0.9).add_(p.grad)
                p.sub_(0.1 * v)
                p.grad = None
    with torch.no_grad():
        logits = net(images)
        last = loss_fn(logits, target).item()
        predicted = logits.argmax(1)
    assert last < 0.5 * first
    assert (predicted[~scribbled] == truth[~scribbled]).float().mean() > 0.85
