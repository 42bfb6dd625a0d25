"""Segmentation losses that ignore unannotated pixels.

All losses take raw logits (N, C, *spatial) and integer targets (N, *spatial)
in which ``ignore_index`` marks pixels nobody annotated (sparse scribbles,
unlabelled regions). Such pixels contribute nothing to the loss and receive an
exactly zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    /,
    *,
    weights: torch.Tensor | None = None,
    ignore_index: int = -1,
) -> torch.Tensor:
    """Pixel-weighted cross-entropy over annotated pixels.

    Parameters
    ----------
    logits : torch.Tensor
        Shape (N, C, *spatial), float: unnormalised class scores.
    target : torch.Tensor
        Shape (N, *spatial), int64: class indices in ``[0, C)``, or
        ``ignore_index`` for unannotated pixels.
    weights : torch.Tensor, optional
        Shape (N, *spatial), float, >= 0: per-pixel weights such as
        :func:`napari_unet.core.training.weight_map.unet_weight_map`. Values at
        unannotated pixels are not used (they may even be NaN).
    ignore_index : int
        Target value of unannotated pixels.

    Returns
    -------
    torch.Tensor
        Scalar: ``sum(w * ce) / sum(w)`` over the annotated pixels, i.e. the
        weighted mean cross-entropy (the plain mean when ``weights`` is None).
        0 if nothing is annotated, or all annotated weights are 0; the zero
        is still connected to ``logits``, so ``backward()`` works and yields
        zero gradients.

    Notes
    -----
    Unannotated pixels carry no gradient because the per-pixel loss there is
    replaced by a constant 0 before reduction and they are left out of the
    normaliser: the network is neither pushed towards background where the
    user simply did not paint, nor is the loss diluted by the number of
    unpainted pixels. This is what makes training from sparse scribbles work.

    The loss is normalised by the sum of the weights, not by the number of
    annotated pixels (the same convention as PyTorch's class ``weight``):
    multiplying all weights by a constant leaves the loss unchanged, and the
    loss is on the same scale as unweighted cross-entropy whatever the weight
    map, so learning rates need not be retuned when ``w0`` changes. The
    weights still change the relative influence of pixels.

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(1, 2, 1, 3)
    >>> target = torch.tensor([[[0, 1, -1]]])
    >>> masked_cross_entropy(logits, target)  # log(2)
    tensor(0.6931)
    """
    _check_shapes(logits, target, weights)
    target = target.long()
    annotated = target != ignore_index
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    if weights is None:
        w = annotated.to(per_pixel.dtype)
    else:
        w = torch.where(annotated, weights.to(per_pixel.dtype), torch.zeros((), dtype=per_pixel.dtype))
    total = (w * per_pixel).sum()
    return total / w.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    /,
    *,
    ignore_index: int = -1,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Multi-class soft Dice loss over annotated pixels.

    Parameters
    ----------
    logits : torch.Tensor
        Shape (N, C, *spatial), float: unnormalised class scores.
    target : torch.Tensor
        Shape (N, *spatial), int64: class indices in ``[0, C)``, or
        ``ignore_index`` for unannotated pixels.
    ignore_index : int
        Target value of unannotated pixels.
    smooth : float
        Added to numerator and denominator of every class's Dice.

    Returns
    -------
    torch.Tensor
        Scalar in [0, 1]: ``1 - mean_c dice_c`` over the classes that occur
        among the annotated pixels of the batch, with
        ``dice_c = (2 * sum(p_c * y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth)``
        where ``p`` are softmax probabilities and ``y`` the one-hot target,
        both summed over annotated pixels only. 0 (connected to ``logits``)
        if nothing is annotated.

    Notes
    -----
    The sums run over the whole batch ("batch Dice"), which is stable when a
    tile holds only a few annotated pixels. Probabilities at unannotated
    pixels are masked out, so they carry no gradient: predicting anything
    there neither helps nor hurts. Classes absent from the annotation are left
    out of the average, since their Dice would only reward predicting nothing.

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])  # (1, 2, 1, 2)
    >>> float(soft_dice_loss(logits, torch.tensor([[[0, 1]]]))) < 1e-3
    True
    """
    _check_shapes(logits, target, None)
    target = target.long()
    n_classes = logits.shape[1]
    annotated = (target != ignore_index).unsqueeze(1)  # (N, 1, *spatial)
    probabilities = torch.softmax(logits.float(), dim=1)
    probabilities = torch.where(annotated, probabilities, torch.zeros((), dtype=probabilities.dtype))
    safe_target = torch.where(annotated.squeeze(1), target, torch.zeros((), dtype=target.dtype))
    one_hot = F.one_hot(safe_target, n_classes).movedim(-1, 1).to(probabilities.dtype)
    one_hot = one_hot * annotated
    reduce_dims = [0, *range(2, logits.ndim)]
    intersection = (probabilities * one_hot).sum(reduce_dims)
    predicted = probabilities.sum(reduce_dims)
    actual = one_hot.sum(reduce_dims)
    dice = (2 * intersection + smooth) / (predicted + actual + smooth)
    present = actual > 0
    n_present = present.sum()
    mean_dice = torch.where(present, dice, torch.zeros((), dtype=dice.dtype)).sum() / n_present.clamp_min(1)
    # (1 - mean) when some class is present, a connected 0 otherwise
    return torch.where(n_present > 0, 1 - mean_dice, probabilities.sum() * 0)


def dice_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    /,
    *,
    weights: torch.Tensor | None = None,
    ignore_index: int = -1,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """Masked cross-entropy plus ``dice_weight`` times soft Dice.

    Parameters
    ----------
    logits : torch.Tensor
        Shape (N, C, *spatial), float.
    target : torch.Tensor
        Shape (N, *spatial), int64, ``ignore_index`` where unannotated.
    weights : torch.Tensor, optional
        Shape (N, *spatial): per-pixel weights of the cross-entropy term only.
    ignore_index : int
        Target value of unannotated pixels.
    dice_weight : float
        Factor of the Dice term; 0 gives plain :func:`masked_cross_entropy`.

    Returns
    -------
    torch.Tensor
        Scalar: ``masked_cross_entropy(...) + dice_weight * soft_dice_loss(...)``.

    Notes
    -----
    Cross-entropy gives well-calibrated per-pixel gradients (and carries the
    U-Net border weights); Dice counters class imbalance at the level of whole
    regions. Unannotated pixels carry no gradient in either term.

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(1, 2, 2, 2)
    >>> target = torch.tensor([[[0, 1], [-1, -1]]])
    >>> bool(dice_cross_entropy(logits, target) > masked_cross_entropy(logits, target))
    True
    """
    ce = masked_cross_entropy(logits, target, weights=weights, ignore_index=ignore_index)
    if dice_weight == 0:
        return ce
    return ce + dice_weight * soft_dice_loss(logits, target, ignore_index=ignore_index)


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> None:
    """Raise ``ValueError`` unless logits are (N, C, *S), target and weights (N, *S)."""
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (N, C, *spatial), got {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {expected} to match logits")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")
    if weights is not None and tuple(weights.shape) != expected:
        raise ValueError(f"weights have shape {tuple(weights.shape)}, expected {expected} to match target")
