"""The U-Net itself: the paper's geometry, initialisation, layers and its configuration."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from napari_unet.core.network.unet import UNet, UNetConfig, count_parameters, halo, output_size, valid_input_size


def _net(**options) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(**options)).eval()


# --- the paper's geometry ---------------------------------------------------------------


def test_paper_network_maps_572_to_388_in_a_real_forward_pass():
    net = _net(depth=5, padding="valid", base_features=2)  # narrow for speed; width does not change geometry
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 572, 572))
    assert tuple(out.shape) == (1, 2, 388, 388)


def test_paper_geometry_from_the_formulas():
    config = UNetConfig(depth=5, padding="valid")
    assert output_size(config, 572) == 388
    assert halo(config) == 92
    assert valid_input_size(config, 388) == 572


def test_paper_network_has_about_31_million_parameters():
    net = UNet(UNetConfig(depth=5, base_features=64, padding="valid", in_channels=1, n_classes=2))  # no forward pass
    n = count_parameters(net)
    assert 30_500_000 < n < 31_500_000, n


def test_same_padding_has_no_halo():
    assert halo(UNetConfig(depth=5, padding="same")) == 0


# --- output_size ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [573, 571, 10, 1])
def test_output_size_is_none_for_invalid_valid_network_sizes(size):
    assert output_size(UNetConfig(depth=5, padding="valid"), size) is None


def test_output_size_is_none_when_same_network_cannot_pool_evenly():
    assert output_size(UNetConfig(depth=3, padding="same"), 30) is None  # 30 -> 15, odd at the second pooling


@pytest.mark.parametrize("size", [4, 32, 100])
def test_output_size_of_same_network_is_the_input_size(size):
    assert output_size(UNetConfig(depth=3, padding="same"), size) == size


def test_same_network_forward_keeps_a_non_square_size():
    net = _net(depth=3, padding="same", base_features=2)
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 24, 40))
    assert tuple(out.shape[-2:]) == (24, 40)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_output_size_agrees_with_the_forward_pass_for_every_valid_size(padding):
    net = _net(depth=3, padding=padding, base_features=2)
    checked = 0
    for size in range(1, 90):
        expected = output_size(net.config, size)
        if expected is None:
            continue
        with torch.no_grad():
            out = net(torch.zeros(1, 1, size, 8 if padding == "same" else 44))
        assert out.shape[-2] == expected, size
        checked += 1
    assert checked > 10


def test_valid_input_size_of_same_network_is_a_multiple_of_the_downsampling():
    assert valid_input_size(UNetConfig(depth=3, padding="same"), 10) == 12


# --- initialisation and layers ---------------------------------------------------------------


def test_convolutions_use_he_normal_initialisation():
    net = _net(depth=3, base_features=8, padding="valid")
    checked = 0
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 1000:
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            std = float(m.weight.detach().std())
            assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.12), (m, std)
            assert abs(float(m.weight.detach().mean())) < 0.2 * std
            checked += 1
    assert checked >= 4


def test_up_convolutions_use_he_normal_with_their_true_fan_in():
    # A 2x2 stride-2 up-convolution feeds each output pixel from exactly one kernel tap
    # of every input channel: N = in_channels incoming nodes (the paper's sqrt(2/N)).
    net = _net(depth=3, base_features=8, padding="valid")
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert ups
    for m in ups:
        std = float(m.weight.detach().std())
        assert std == pytest.approx(math.sqrt(2 / m.in_channels), rel=0.12), (m, std)


def test_biases_start_at_zero():
    net = _net(depth=2, base_features=4)
    biases = [m.bias for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert biases
    assert all(float(b.detach().abs().max()) == 0.0 for b in biases)


def test_network_has_no_fully_connected_layer():
    net = _net(depth=5, base_features=2)
    assert not any(isinstance(m, nn.Linear) for m in net.modules())


def test_dropout_exists_only_at_the_bottleneck():
    net = _net(depth=3, base_features=4, dropout=0.5)
    dropouts = [name for name, m in net.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert dropouts == ["dropout"]


def test_no_dropout_layer_without_dropout():
    net = _net(depth=3, base_features=4, dropout=0.0)
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in net.modules())


def test_dropout_acts_in_training_and_not_in_evaluation():
    net = _net(depth=2, base_features=4, dropout=0.5, padding="same")
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


def test_bottleneck_dropout_sees_the_deepest_features():
    net = _net(depth=3, base_features=4, dropout=0.5, padding="same")
    seen = {}

    def record(module, inputs, output):
        seen["channels"] = inputs[0].shape[1]

    net.dropout.register_forward_hook(record)
    with torch.no_grad():
        net(torch.rand(1, 1, 16, 16))
    assert seen["channels"] == 4 * 2 ** (3 - 1)


# --- configuration -------------------------------------------------------------------------


def test_config_dict_round_trip():
    config = UNetConfig(
        in_channels=3, n_classes=4, depth=3, base_features=16, padding="same", norm="group", dropout=0.25
    )
    assert UNetConfig.from_dict(config.to_dict()) == config


def test_config_refuses_unknown_keys():
    data = {**UNetConfig().to_dict(), "kernel": 5}
    with pytest.raises(ValueError, match="unknown U-Net settings"):
        UNetConfig.from_dict(data)


def test_config_refuses_missing_keys():
    data = UNetConfig().to_dict()
    del data["depth"]
    with pytest.raises(ValueError, match="missing"):
        UNetConfig.from_dict(data)


@pytest.mark.parametrize(
    "options",
    [
        {"depth": 0},
        {"depth": 9},
        {"padding": "full"},
        {"norm": "layer"},
        {"dropout": 1.0},
        {"in_channels": 0},
        {"n_classes": 0},
    ],
)
def test_config_refuses_impossible_values(options):
    with pytest.raises(ValueError):
        UNetConfig(**options)


def test_downsampling_is_two_to_the_depth_minus_one():
    assert UNetConfig(depth=5).downsampling == 16
    assert UNetConfig(depth=1).downsampling == 1
