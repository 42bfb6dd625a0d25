"""Read a bioimage.io model package back into a napari-unet model, when its network is napari-unet's U-Net.

A package qualifies when its ``pytorch_state_dict`` weights name napari-unet's
architecture (the callable :data:`~.bioimageio_architecture.CALLABLE_NAME`),
its architecture settings are a valid :class:`~.unet.UNetConfig`, it carries
napari-unet's description (``config.napari_unet``, written by
:func:`~.bioimageio_export.export_bioimageio`) and its weights are exactly
those of that network. Anything else is refused with the reason. The weights
file is read with ``torch.load(weights_only=True)``, which builds tensors and
plain containers only (never objects that run code).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.network import bioimageio_architecture as arch
from napari_unet.core.network.bioimageio_requirements import bioimageio_spec, quiet_bioimageio
from napari_unet.core.network.file_errors import ModelFileError, short
from napari_unet.core.network.model_file import ModelDescription, SegmentationModel, expected_tensors
from napari_unet.core.network.unet import UNet, UNetConfig

__all__ = ["import_bioimageio", "is_bioimageio_package"]

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_ELSEWHERE = "run it with bioimageio.core, deepImageJ, QuPath or ilastik instead, or choose a napari-unet model"
#: A weights file may hold this many bytes more than its tensors (the pickle's structure).
_WEIGHTS_SLACK = 1 << 20


def is_bioimageio_package(path: str | os.PathLike, /) -> bool:
    """Whether ``path`` is a zip file with a bioimage.io description (``rdf.yaml`` or ``*bioimageio.yaml``) at its top."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n in _RDF_NAMES or n.endswith(".bioimageio.yaml") for n in archive.namelist() if "/" not in n)
    except (zipfile.BadZipFile, OSError):
        return False


def import_bioimageio(path: str | os.PathLike, /, *, device: str | torch.device = "cpu") -> SegmentationModel:
    """Load a bioimage.io model package whose network is napari-unet's U-Net.

    Parameters
    ----------
    path : path-like
        A ``.zip`` package, e.g. one written by ``napari-unet export-bioimageio``.
    device : str or torch.device
        Where to put the weights.

    Returns
    -------
    SegmentationModel
        The model, in evaluation mode, identical to the one exported.

    Raises
    ------
    BioimageioMissing
        bioimageio.spec or bioimageio.core is not installed.
    ModelFileError
        The package is damaged or invalid, has no PyTorch state dict, its
        architecture is not napari-unet's U-Net, it lacks napari-unet's
        description, or its weights do not match.
    """
    path = Path(path)
    _check_package(path)
    spec = bioimageio_spec()
    refusal: ModelFileError | None = None
    with quiet_bioimageio():  # the description holds the open package: collected here, with its warnings silenced
        try:
            weights_file, config, description = _napari_parts(path, _load_description(path, spec))
        except ModelFileError as exc:  # a fresh error: this one's traceback would keep the description alive
            refusal = ModelFileError(str(exc))
    if refusal is not None:
        raise refusal
    network = UNet(config, initialise=False)
    network.load_state_dict(_read_weights(path, weights_file, config))
    network.to(device)
    model = SegmentationModel(description, network)
    model.source = path
    return model


def _check_package(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist; check the path")
    if not is_bioimageio_package(path):
        raise ModelFileError(
            f"{path.name} is not a bioimage.io model package (a zip file with rdf.yaml inside), or it is damaged; "
            "choose a package exported by napari-unet or a napari-unet model file (.unet.safetensors)"
        )


def _napari_parts(path: Path, descr: Any) -> tuple[str, UNetConfig, ModelDescription]:
    """The weights file's name, the architecture and napari-unet's description, or why the package is not ours."""
    weights = descr.weights.pytorch_state_dict
    if weights is None:
        formats = sorted(name for name, entry in descr.weights if entry is not None)
        raise ModelFileError(
            f"{path.name} has no PyTorch state dict weights (it has {', '.join(formats)}), so napari-unet cannot "
            f"tell whether its network is napari-unet's U-Net; {_ELSEWHERE}"
        )
    config = _config(path, weights.architecture)
    source = weights.source
    name = Path(str(getattr(source, "path", source))).name
    return name, config, _napari_description(path, descr, config)


def _load_description(path: Path, spec: Any) -> Any:
    """The package's description, validated by bioimageio.spec (hashes of its files included)."""
    detail = ""
    try:
        descr = spec.load_model_description(path, format_version="latest", perform_io_checks=True)
    except (ValueError, OSError) as exc:  # an invalid description, a file whose hash differs, a broken zip
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1] if lines else type(exc).__name__
    if detail:
        raise ModelFileError(
            f"{path.name} is not a valid bioimage.io model package ({detail[:200]}); it may be damaged: "
            "copy or download it again"
        )
    if getattr(descr, "type", None) != "model":
        raise ModelFileError(f"{path.name} describes a bioimage.io {descr.type}, not a model")
    return descr


def _config(path: Path, architecture: Any) -> UNetConfig:
    """napari-unet's architecture settings, or a refusal naming the package's architecture."""
    where = getattr(architecture, "import_from", None) or getattr(architecture.source, "path", architecture.source)
    name = str(architecture.callable)
    if name != arch.CALLABLE_NAME:
        raise ModelFileError(
            f"{path.name}: its network is {name!r} (from {short(str(where))[1:-1]}), not napari-unet's U-Net "
            f"({arch.CALLABLE_NAME}); napari-unet can only use packages whose PyTorch architecture is its own; "
            f"{_ELSEWHERE}"
        )
    try:
        return UNetConfig.from_dict(dict(architecture.kwargs))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(
            f"{path.name}: its architecture settings are not napari-unet's U-Net settings ({exc}); {_ELSEWHERE}"
        ) from exc


def _napari_description(path: Path, descr: Any, config: UNetConfig) -> ModelDescription:
    """The napari-unet description stored in the package, checked against the architecture it names."""
    doc = (descr.config.model_extra or {}).get("napari_unet")
    if doc is None:
        raise ModelFileError(
            f"{path.name} has napari-unet's network but not its description (config.napari_unet: normalisation, "
            "class names, instance rule); export the model again with napari-unet export-bioimageio"
        )
    description = ModelDescription.from_dict(_plain(doc))
    if description.config != config:
        raise ModelFileError(
            f"{path.name}: its napari-unet description and its architecture settings disagree; the package was "
            "edited by hand or is damaged: export the model again"
        )
    return description


def _plain(value: Any) -> Any:
    """YAML-loaded values (which may be ruyaml's types) as plain dicts, lists and scalars."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_weights(path: Path, weights_file: str, config: UNetConfig) -> dict[str, torch.Tensor]:
    """The state dict, read without running code, and checked tensor by tensor against ``config``'s network."""
    expected = expected_tensors(config)
    limit = sum(t.numel() * t.element_size() for t in expected.values()) + _WEIGHTS_SLACK
    data = _member_bytes(path, weights_file, limit)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or hostile pickle
        raise ModelFileError(f"{path.name}: its weights could not be read ({short(str(exc))[1:-1]})") from exc
    if not isinstance(state, dict) or set(state) != set(expected):
        names = sorted(state)[:3] if isinstance(state, dict) else type(state).__name__
        raise ModelFileError(f"{path.name}: its weights ({names}...) are not those of napari-unet's U-Net it describes")
    for key, like in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != like.shape:
            raise ModelFileError(f"{path.name}: weight {key} does not have the shape {tuple(like.shape)} it needs")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelFileError(f"{path.name}: weight {key} contains NaN or Inf; the model is broken")
        state[key] = value.to(like.dtype)
    return state


def _member_bytes(path: Path, name: str, limit: int) -> bytes:
    """One file of the package, refused if larger than ``limit`` bytes."""
    with zipfile.ZipFile(path) as archive:
        member = Path(name).name
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ModelFileError(f"{path.name} lacks its weights file {member}") from None
        if info.file_size > limit:
            raise ModelFileError(
                f"{path.name}: its weights file holds {info.file_size} bytes, more than its network needs"
            )
        return archive.read(info)
