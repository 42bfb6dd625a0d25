"""Batch normalisation folded into the convolutions for inference: same function, model untouched."""

from __future__ import annotations

import numpy as np
import torch

from napari_unet.core import load_named_model, new_model
from napari_unet.core.network.folding import folded_copy, has_foldable_norm


def _trained_looking(net: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics and affine weights away from a fresh layer's identity."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) * 2 - 1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
    return net.eval()


def test_folded_network_computes_the_same_logits_without_batch_norm_layers():
    net = _trained_looking(new_model(depth=3, base_features=8, norm="batch").network)
    fast = folded_copy(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 1, 48, 40)
    with torch.inference_mode():
        reference, folded = net(x), fast(x)
    assert float(reference.abs().max()) > 1.0  # a network whose normalisation matters
    np.testing.assert_allclose(folded, reference, atol=1e-5 * float(reference.abs().max()))


def test_the_original_network_keeps_its_layers_weights_and_mode():
    net = _trained_looking(new_model(depth=2, base_features=4, norm="batch").network)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    net.train()
    fast = folded_copy(net)
    assert net.training and not fast.training
    assert norms > 0 and sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == norms
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad for p in fast.parameters())


def test_only_batch_norm_is_foldable():
    assert has_foldable_norm(new_model(depth=2, base_features=4, norm="batch").network)
    for norm in ("group", "instance", "none"):
        net = new_model(depth=2, base_features=8, norm=norm).network
        assert not has_foldable_norm(net), norm
        x = torch.randn(1, 1, 32, 32)
        with torch.inference_mode():
            np.testing.assert_allclose(folded_copy(net.eval())(x), net(x), atol=1e-5)


def test_shipped_model_folded_gives_the_same_probabilities():
    model = load_named_model("nuclei")
    net = model.network.eval()
    x = torch.randn(1, 1, 96, 96)
    with torch.inference_mode():
        reference = torch.softmax(net(x), 1)
        folded = torch.softmax(folded_copy(net)(x), 1)
    assert float((folded - reference).abs().max()) < 1e-5
