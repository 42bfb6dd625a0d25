"""The U-Net of Ronneberger, Fischer and Brox (2015), configurable.

The network is described by a :class:`UNetConfig`, a plain dataclass that is
stored inside every model file, so a saved model rebuilds itself with no
defaults taken from code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

Padding = Literal["valid", "same"]
Norm = Literal["none", "batch", "group", "instance"]

#: Upper limits of an architecture, far above the shipped models (depth 4-5, 16 base features,
#: 256 at the deepest level) and the paper's U-Net (depth 5, 64 base features, 1024 at the deepest level).
#: With them a network has at most about 125 million parameters (500 MB of float32 weights).
MAX_IN_CHANNELS = 64
MAX_CLASSES = 256
MAX_DEPTH = 8
#: Feature maps at the deepest level, ``base_features * 2**(depth-1)``; also bounds ``base_features``.
MAX_WIDEST_FEATURES = 2048


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net.

    Parameters
    ----------
    in_channels : int
        Number of input channels (1 for grayscale, 3 for RGB, ...).
    n_classes : int
        Number of output classes (channels of the final 1x1 convolution).
    depth : int
        Number of resolution levels. The paper uses 5 (four 2x2 poolings).
    base_features : int
        Feature maps at the first level; each level down doubles them.
        The paper uses 64.
    padding : {"valid", "same"}
        ``"valid"``: unpadded convolutions as in the paper (572 -> 388 for
        depth 5). ``"same"``: zero-padded convolutions, output as large as the
        input.
    norm : {"none", "batch", "group", "instance"}
        Normalisation after each convolution. The paper has none. ``"group"``
        needs ``base_features`` below 8 or a multiple of 8 (groups of 8).
    dropout : float
        Dropout probability at the end of the contracting path (the paper's
        "drop-out layers at the end of the contracting path").

    Raises
    ------
    ValueError
        If a setting has the wrong type or lies outside its limits:
        ``in_channels`` 1 to :data:`MAX_IN_CHANNELS` (64), ``n_classes`` 1 to
        :data:`MAX_CLASSES` (256), ``depth`` 1 to :data:`MAX_DEPTH` (8),
        ``base_features`` at least 1 and at most
        :data:`MAX_WIDEST_FEATURES` (2048) feature maps at the deepest level
        (``base_features * 2**(depth-1)``), ``dropout`` in [0, 1).
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 5
    base_features: int = 64
    padding: Padding = "valid"
    norm: Norm = "none"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_count("in_channels", self.in_channels, MAX_IN_CHANNELS)
        _check_count("n_classes", self.n_classes, MAX_CLASSES)
        _check_count("depth", self.depth, MAX_DEPTH)
        _check_count("base_features", self.base_features, MAX_WIDEST_FEATURES)
        widest = self.base_features * 2 ** (self.depth - 1)
        if widest > MAX_WIDEST_FEATURES:
            raise ValueError(
                f"base_features {self.base_features} at depth {self.depth} makes {widest} feature maps at the "
                f"deepest level, more than the limit of {MAX_WIDEST_FEATURES} (base_features * 2**(depth-1))"
            )
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if self.norm not in ("none", "batch", "group", "instance"):
            raise ValueError(f"norm must be none, batch, group or instance, got {self.norm!r}")
        if self.norm == "group" and any(f > 8 and f % 8 for f in self.features):
            raise ValueError(f"norm 'group' needs base_features below 8 or a multiple of 8, got {self.base_features}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def features(self) -> list[int]:
        """Feature maps at each level, from the first (``base_features``) to the deepest."""
        return [self.base_features * 2**i for i in range(self.depth)]

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Build a configuration from a dict, refusing unknown keys.

        Every field must be present: a model file must describe itself fully.
        """
        if not isinstance(data, dict):
            raise ValueError(f"the U-Net settings must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        missing = names - set(data)
        if unknown:
            raise ValueError(f"unknown U-Net settings {sorted(unknown)}")
        if missing:
            raise ValueError(f"U-Net settings missing from the model description: {sorted(missing)}")
        return cls(**data)

    @property
    def downsampling(self) -> int:
        """Total down-sampling factor of the contracting path, ``2**(depth-1)``."""
        return 2 ** (self.depth - 1)


def _check_count(name: str, value: Any, limit: int) -> None:
    """Refuse ``value`` unless it is an integer from 1 to ``limit``, naming the setting and the limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not 1 <= value <= limit:
        raise ValueError(f"{name} must be between 1 and {limit}, got {value}")


def _norm_layer(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: int, norm: Norm) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=padding, bias=bias),
            _norm_layer(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=padding, bias=bias),
            _norm_layer(norm, out_ch),
            nn.ReLU(inplace=True),
        )


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the spatial centre of ``x`` (N, C, H, W) to ``height`` x ``width``."""
    dy = (x.shape[-2] - height) // 2
    dx = (x.shape[-1] - width) // 2
    return x[..., dy : dy + height, dx : dx + width]


class UNet(nn.Module):
    """U-Net: contracting path, expanding path with cropped skips, 1x1 output.

    Parameters
    ----------
    config : UNetConfig
        The architecture.
    initialise : bool
        Give the weights their He-normal start values (:meth:`reset_parameters`).
        False when they are about to be replaced (loading a file) or hold no
        data (a network on the ``meta`` device, for its shapes).

    Notes
    -----
    Weights use He-normal initialisation (std ``sqrt(2/N)``, ``N`` the fan-in),
    as the paper recommends for ReLU networks. There is no fully connected
    layer, so any input whose size is valid for the geometry (see
    :func:`output_size`) can be processed.
    """

    def __init__(self, config: UNetConfig, *, initialise: bool = True) -> None:
        super().__init__()
        self.config = config
        pad = 1 if config.padding == "same" else 0
        feats = config.features
        self.down = nn.ModuleList()
        ch = config.in_channels
        for f in feats:
            self.down.append(DoubleConv(ch, f, padding=pad, norm=config.norm))
            ch = f
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for f in reversed(feats[:-1]):
            self.up.append(nn.ConvTranspose2d(ch, f, 2, stride=2))
            self.up_conv.append(DoubleConv(2 * f, f, padding=pad, norm=config.norm))
            ch = f
        self.head = nn.Conv2d(ch, config.n_classes, 1)
        if initialise:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal initialisation of every convolution, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                # each output pixel of a stride-2, 2x2 up-convolution sees one tap per
                # input channel, so N = in_channels (torch's fan_in would say 4 * out)
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_channels))
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                continue
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch (N, C_in, H, W) to class logits (N, n_classes, H', W')."""
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
        x = self.dropout(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = up(x)
            if skip.shape[-2:] != x.shape[-2:]:
                skip = center_crop(skip, x.shape[-2], x.shape[-1])
            x = conv(torch.cat([skip, x], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# The geometry of the network (halo, valid sizes) has its own module; these names stay importable from here.
from napari_unet.core.network.geometry import halo, output_size, valid_input_size  # noqa: E402

__all__ = [
    "DoubleConv",
    "UNet",
    "UNetConfig",
    "center_crop",
    "count_parameters",
    "halo",
    "output_size",
    "valid_input_size",
]
