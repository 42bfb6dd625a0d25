"""Models the user fine-tuned, saved automatically in a per-user folder.

An accepted fine-tuned model is written here at once (atomically), so it
outlives the viewer without a *Save model...*; the Segment widget lists the
folder's models beside the shipped ones and ``napari-unet models`` lists
them too. The folder is ``platformdirs.user_data_dir("napari-unet")/models``
(e.g. ``~/.local/share/napari-unet/models`` on Linux); the environment
variable :data:`ENV_VAR` names another one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_unet.core.io.atomic import OutputError, probe_writable
from napari_unet.core.network.model_file import (
    FILE_SUFFIX,
    ModelFileError,
    SegmentationModel,
    read_description,
    save_model,
)

#: Environment variable naming the folder of the user's models (instead of the per-user data folder).
ENV_VAR = "NAPARI_UNET_MODELS_DIR"


@dataclass(frozen=True)
class UserModel:
    """A model file in the user's models folder.

    Attributes
    ----------
    key : str
        The file name without its suffix (also accepted by ``--model``).
    title : str
        The model's own name.
    path : pathlib.Path
        The file.
    summary : str
        The model's description (base model, data, verdict).
    saved : str
        When it was saved (ISO date and time), ``""`` if unknown.
    """

    key: str
    title: str
    path: Path
    summary: str
    saved: str


def user_models_folder() -> Path:
    """The folder of the user's models: ``$NAPARI_UNET_MODELS_DIR``, else the per-user data folder."""
    given = os.environ.get(ENV_VAR, "").strip()
    if given:
        return Path(given).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-unet", appauthor=False)) / "models"


def user_models() -> list[UserModel]:
    """The readable models of the user's folder, newest first; unreadable files are skipped."""
    folder = user_models_folder()
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(f"*{FILE_SUFFIX}"):
        try:
            desc = read_description(path)
        except ModelFileError:
            continue
        history = desc.training_history[-1] if desc.training_history else {}
        saved = str(history.get("accepted", history.get("date", "")))
        found.append(UserModel(path.name[: -len(FILE_SUFFIX)], desc.name, path, desc.description, saved))
    return sorted(found, key=lambda m: (m.saved, m.key), reverse=True)


def save_user_model(
    model: SegmentationModel,
    /,
    *,
    base_model: str,
    training_data: Sequence[str],
    verdict: str,
) -> Path:
    """Write an accepted fine-tuned ``model`` into :func:`user_models_folder`; returns the file.

    The model's description and the last entry of its training history get
    the base model, the training data, the verdict and the date (the model
    is changed in place, so the copy in memory says the same as the file).

    Raises
    ------
    OutputError
        The folder cannot be created or written (read-only, full disk); the
        message names it. The model in memory is unchanged apart from its
        description.
    """
    now = _dt.datetime.now().astimezone()
    desc = model.description
    data = ", ".join(training_data) or "no named images"
    desc.description = f"Fine-tuned from {base_model} on {now:%Y-%m-%d %H:%M} with {data}. {verdict}".strip()
    if desc.training_history:
        desc.training_history[-1].update(
            {"base_model": base_model, "verdict": verdict, "accepted": now.isoformat(timespec="seconds")}
        )
    folder = user_models_folder()
    probe_writable(folder, create=True)
    path = _free_path(folder, f"{_slug(desc.name)}-{now:%Y%m%d-%H%M%S}")
    return save_model(model, path, overwrite=False)


def remove_user_model(path: str | os.PathLike, /) -> None:
    """Delete a model file of the user's folder; never a file elsewhere (shipped models are safe).

    Raises
    ------
    OutputError
        ``path`` is not a model file in :func:`user_models_folder`, or it cannot be deleted.
    """
    path = Path(path)
    folder = user_models_folder().resolve()
    if path.resolve().parent != folder or not path.name.endswith(FILE_SUFFIX):
        raise OutputError(f"{str(path)!r} is not one of your saved models (in {str(folder)!r}); it was not removed")
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"could not remove {str(path)!r}: {exc.strerror or exc}") from exc


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "fine-tuned"


def _free_path(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}{FILE_SUFFIX}"
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{FILE_SUFFIX}"
        n += 1
    return path
