"""The U-Net as a bioimage.io package describes it: one self-contained Python file.

A bioimage.io ``pytorch_state_dict`` entry names an architecture file and a
callable in it that builds the network from keyword arguments. The file
written into packages is generated from :mod:`napari_unet.core.network.unet`
itself (its imports of other napari-unet modules dropped) plus
:class:`NapariUNet`, so a package runs where napari-unet is not installed, and
the network it describes is the one napari-unet trains, not a copy kept in
step by hand.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import torch

from napari_unet.core.network import unet as _unet
from napari_unet.core.network.unet import UNet, UNetConfig

#: The callable a package's architecture file defines; packages naming another one are not napari-unet's.
CALLABLE_NAME = "NapariUNet"
#: Name of the architecture file inside a package.
FILE_NAME = "napari_unet_architecture.py"


class NapariUNet(UNet):
    """napari-unet's U-Net, built from its settings, returning class probabilities.

    Parameters
    ----------
    **settings
        The fields of ``UNetConfig`` (in_channels, n_classes, depth,
        base_features, padding, norm, dropout).

    Notes
    -----
    The output is the softmax over the class axis of the U-Net's logits, so a
    bioimage.io consumer gets probabilities without post-processing. The
    state dict is that of ``UNet``: the weights of a napari-unet model file
    load unchanged.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__(UNetConfig(**settings), initialise=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch (N, C_in, H, W) to class probabilities (N, n_classes, H', W')."""
        return torch.softmax(super().forward(x), dim=1)


def architecture_source() -> str:
    """The text of the architecture file: the U-Net module without napari-unet imports, plus :class:`NapariUNet`.

    Returns
    -------
    str
        Python source that imports only ``torch``, ``math``, ``dataclasses``
        and ``typing``.
    """
    tree = ast.parse(inspect.getsource(_unet))
    tree.body = [node for node in tree.body if not _is_dropped(node)]
    header = '"""napari-unet\'s U-Net (generated from napari_unet.core.network.unet for a bioimage.io package)."""\n'
    body = ast.unparse(tree)
    return f"{header}\n{body}\n\n\n{inspect.getsource(NapariUNet)}"


def _is_dropped(node: ast.stmt) -> bool:
    """Imports of napari-unet modules, ``__all__`` and the module docstring do not go into the file."""
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").startswith("napari_unet")
    if isinstance(node, ast.Import):
        return any(alias.name.startswith("napari_unet") for alias in node.names)
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
