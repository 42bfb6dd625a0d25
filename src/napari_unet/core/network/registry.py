"""Models shipped inside the package, found by name.

Shipped models live in ``napari_unet/models/*.unet.safetensors`` so they work
offline; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from napari_unet.core.network.model_file import (
    FILE_SUFFIX,
    ModelFileError,
    SegmentationModel,
    load_model,
    read_description,
)


@dataclass(frozen=True)
class ShippedModel:
    """A model file that comes with napari-unet.

    Attributes
    ----------
    key : str
        Short name used on the command line (``--model nuclei``), the file
        name without its suffix.
    title : str
        Friendly name shown in the GUI (the model's own ``name``).
    path : pathlib.Path
        The file.
    summary : str
        First sentence of the model's description.
    """

    key: str
    title: str
    path: Path
    summary: str


def models_folder() -> Path:
    """Folder holding the shipped model files."""
    return Path(str(resources.files("napari_unet") / "models"))


#: The model the widgets start with: the bundled samples are nuclei.
DEFAULT_MODEL = "nuclei"


def shipped_models() -> list[ShippedModel]:
    """All shipped models, the default (:data:`DEFAULT_MODEL`) first, then by key. Unreadable files are skipped."""
    found = []
    folder = models_folder()
    if not folder.is_dir():
        return []
    for path in sorted(folder.glob(f"*{FILE_SUFFIX}")):
        try:
            desc = read_description(path)
        except ModelFileError:
            continue
        key = path.name[: -len(FILE_SUFFIX)]
        summary = desc.description.split(". ")[0].strip()
        found.append(ShippedModel(key=key, title=desc.name, path=path, summary=summary))
    return sorted(found, key=lambda m: (m.key != DEFAULT_MODEL, m.key))


def resolve_model_path(name_or_path: str | os.PathLike, /) -> Path:
    """Path of a shipped model's key or title, a saved model's key (see :mod:`.user_models`), or the path itself.

    Raises
    ------
    ModelFileError
        If it is neither an existing file nor a shipped model's name.
    """
    text = str(name_or_path)
    for model in shipped_models():
        if text in (model.key, model.title):
            return model.path
    from napari_unet.core.network.user_models import user_models  # imports model_file, as this module does

    for saved in user_models():
        if text == saved.key:
            return saved.path
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = ", ".join(m.key for m in shipped_models()) or "none installed"
    raise ModelFileError(f"no model file {text!r} and no shipped model of that name (shipped: {names})")


def load_named_model(name_or_path: str | os.PathLike, /, *, device: str = "cpu") -> SegmentationModel:
    """Load a shipped model by key/title, or a model file by path."""
    return load_model(resolve_model_path(name_or_path), device=device)
