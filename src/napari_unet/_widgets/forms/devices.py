"""The device chooser of the napari-unet widgets."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox

from napari_unet.core.inference.device import mps_available

#: (value, what it runs on) of every device choice.
DEVICES = (
    ("auto", "the GPU if there is one (CUDA, then Apple MPS), otherwise the CPU"),
    ("cpu", "the CPU: always available, slower"),
    ("cuda", "an NVIDIA GPU"),
    ("mps", "an Apple-silicon GPU"),
)


def device_combo(what: str = "Run") -> QComboBox:
    """A combo box of devices; the ones this computer lacks are listed but disabled.

    Parameters
    ----------
    what : str
        Verb of the item tooltips, e.g. ``"Train"``.
    """
    import torch

    available = {"auto": True, "cpu": True, "cuda": torch.cuda.is_available(), "mps": mps_available()}
    combo = QComboBox()
    for name, tip in DEVICES:
        combo.addItem(name, name)
        row = combo.count() - 1
        if available[name]:
            combo.setItemData(row, f"{what} on {tip}.", Qt.ItemDataRole.ToolTipRole)
        else:
            combo.model().item(row).setEnabled(False)
            combo.setItemData(row, f"No {name} device on this computer.", Qt.ItemDataRole.ToolTipRole)
    return combo
