"""The error of a model file that cannot be used, and what its messages advise."""

from __future__ import annotations

from typing import Any

from napari_unet.core.errors import UserError

#: What to do about a file that is not a usable model file (ends most refusals).
CHOOSE = "choose a model file saved by napari-unet (.unet.safetensors)"
#: What to do about a damaged copy of a model file.
RECOPY = "copy or download it again, or choose another model file"


class ModelFileError(UserError, ValueError):
    """A model file cannot be used; the message says why and what to do."""


def short(value: Any) -> str:
    """``repr(value)``, cut to a length that fits a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
