"""Self-describing model files: weights plus everything needed to use them.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_
file: a JSON header followed by raw tensor bytes. Loading it never runs code
from the file (no pickle). The header's metadata holds one JSON document,
under the key ``"napari_unet"``, describing the architecture, the input
normalisation, channel and class names, the instance rule and the training
history; nothing is taken from defaults in code when loading.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.errors import UserError
from napari_unet.core.io.atomic import atomic_write_bytes
from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.normalization import Normalization
from napari_unet.core.network.unet import UNet, UNetConfig

FORMAT_NAME = "napari-unet-model"
FORMAT_VERSION = 1
FILE_SUFFIX = ".unet.safetensors"
_METADATA_KEY = "napari_unet"
#: What to do about a file that is not a usable model file (ends most refusals).
_CHOOSE = "choose a model file saved by napari-unet (.unet.safetensors)"
#: What to do about a damaged copy of a model file.
_RECOPY = "copy or download it again, or choose another model file"
#: A safetensors header larger than this is refused as corrupt (100 MB).
_MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(UserError, ValueError):
    """A model file cannot be used; the message says why and what to do."""


@dataclass
class ModelDescription:
    """Everything about a model except its weights.

    Parameters
    ----------
    config : UNetConfig
        Network architecture.
    normalization : Normalization
        Input intensity mapping.
    channel_names : list of str
        One name per input channel, e.g. ``["DAPI"]`` or ``["R", "G", "B"]``.
    class_names : list of str
        One name per output class, e.g. ``["background", "nucleus", "boundary"]``.
    instance_rule : InstanceRule
        How classes become objects.
    name : str
        Short human-readable name.
    description : str
        What the model is for, trained on what.
    pixel_size_um : float or None
        Pixel size of the training data in micrometres, if known.
    training_history : list of dict
        One entry per training run (data, recipe, metrics), appended by
        training code.
    """

    config: UNetConfig
    normalization: Normalization
    channel_names: list[str]
    class_names: list[str]
    instance_rule: InstanceRule
    name: str = "unnamed model"
    description: str = ""
    pixel_size_um: float | None = None
    training_history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.channel_names) != self.config.in_channels:
            raise ValueError(
                f"{len(self.channel_names)} channel names for a network with {self.config.in_channels} input channels"
            )
        if self.config.n_classes < 2:
            raise ValueError("a segmentation model needs at least two classes: background and one more")
        if len(self.class_names) != self.config.n_classes:
            raise ValueError(f"{len(self.class_names)} class names for a network with {self.config.n_classes} classes")
        self.instance_rule.check_classes(self.config.n_classes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document stored in a model file."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "architecture": self.config.to_dict(),
            "normalization": self.normalization.to_dict(),
            "channel_names": list(self.channel_names),
            "class_names": list(self.class_names),
            "instance_rule": self.instance_rule.to_dict(),
            "pixel_size_um": self.pixel_size_um,
            "training_history": copy.deepcopy(self.training_history),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelDescription:
        """Parse and check the JSON document of a model file."""
        if doc.get("format") != FORMAT_NAME:
            raise ModelFileError(f"this is not a napari-unet model file (no napari-unet description inside); {_CHOOSE}")
        version = doc.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"this model file has format version {version}, newer than this napari-unet understands "
                f"({FORMAT_VERSION}); update napari-unet (pip install -U napari-unet)"
            )
        try:
            return cls(
                config=UNetConfig.from_dict(doc["architecture"]),
                normalization=Normalization.from_dict(doc["normalization"]),
                channel_names=[str(c) for c in doc["channel_names"]],
                class_names=[str(c) for c in doc["class_names"]],
                instance_rule=InstanceRule.from_dict(doc["instance_rule"]),
                name=str(doc.get("name", "unnamed model")),
                description=str(doc.get("description", "")),
                pixel_size_um=doc.get("pixel_size_um"),
                training_history=list(doc.get("training_history", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"the model description is incomplete or invalid: {exc}; {_RECOPY}") from exc


class SegmentationModel:
    """A U-Net together with its description: what the rest of the code uses.

    Parameters
    ----------
    description : ModelDescription
        Architecture, normalisation, names and history.
    network : UNet, optional
        The network; a freshly initialised one is built if omitted.
    """

    def __init__(self, description: ModelDescription, network: UNet | None = None) -> None:
        self.description = description
        self.network = network if network is not None else UNet(description.config)
        self.network.eval()
        self.source: Path | None = None

    @property
    def config(self) -> UNetConfig:
        """Architecture of the network."""
        return self.description.config

    def copy(self) -> SegmentationModel:
        """Deep copy on the CPU: training the copy leaves this model untouched."""
        net = UNet(self.config)
        net.load_state_dict({k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()})
        twin = SegmentationModel(copy.deepcopy(self.description), net)
        twin.source = self.source
        return twin

    def __repr__(self) -> str:
        c = self.config
        return (
            f"SegmentationModel({self.description.name!r}, depth={c.depth}, base={c.base_features}, "
            f"padding={c.padding!r}, classes={self.description.class_names})"
        )


def save_model(
    model: SegmentationModel, path: str | os.PathLike, /, *, half: bool = False, overwrite: bool = True
) -> Path:
    """Write a model file atomically.

    Parameters
    ----------
    model : SegmentationModel
        The model to save.
    path : path-like
        Destination. A crash or a full disk during the write leaves any
        previous file at ``path`` intact.
    half : bool
        Store floating-point weights as float16 (half the size; they are
        converted back to float32 on loading).
    overwrite : bool
        Replace a file at ``path`` (default). If False, an existing file is
        never replaced, also one that appeared while the model was being
        written: :class:`~napari_unet.core.io.atomic.OutputError` is raised
        and that file is left byte for byte as it was.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputError
        The folder is missing or not writable, the disk is full, or
        ``overwrite`` is False and ``path`` exists.
    """
    from safetensors.torch import save

    doc = model.description.to_dict()
    doc["saved"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    doc["weights_dtype"] = "float16" if half else "float32"
    tensors = {}
    for key, value in model.network.state_dict().items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value
    payload = save(tensors, metadata={_METADATA_KEY: json.dumps(doc)})
    path = Path(path)
    atomic_write_bytes(path, payload, overwrite=overwrite)
    return path


def read_description(path: str | os.PathLike, /) -> ModelDescription:
    """Read only the description of a model file, without its weights."""
    header = _read_header(Path(path))
    return _description_from_header(header, Path(path))


def load_model(path: str | os.PathLike, /, *, device: str | torch.device = "cpu") -> SegmentationModel:
    """Load a model file safely.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_model`.
    device : str or torch.device
        Where to put the weights.

    Returns
    -------
    SegmentationModel
        The model, in evaluation mode.

    Raises
    ------
    ModelFileError
        If the file is missing, truncated, corrupt, from another tool or of a
        newer format version. The message says what to do.

    Notes
    -----
    No code from the file is ever executed: the file is parsed as JSON plus
    raw tensor bytes. A pickle (``torch.save``) file is refused.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    header = _read_header(path)
    description = _description_from_header(header, path)
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path.name}: the weights could not be read ({exc}); the file may be truncated: {_RECOPY}"
        ) from exc
    network = UNet(description.config)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path.name}: the weights do not match the described architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); {_RECOPY}"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ModelFileError(
                f"{path.name}: weight {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}; "
                f"{_RECOPY}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelFileError(f"{path.name}: weight {key} contains NaN or Inf; the model is broken: {_RECOPY}")
        tensors[key] = value.to(expected[key].dtype)
    network.load_state_dict(tensors)
    network.to(device)
    model = SegmentationModel(description, network)
    model.source = path
    return model


def _read_header(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ModelFileError(f"model file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise ModelFileError(f"{str(path)!r} is a folder, not a model file")
    try:
        with path.open("rb") as fh:
            start = fh.read(8)
            if len(start) < 8:
                raise ModelFileError(f"{path.name} is empty or truncated; it is not a usable model file: {_RECOPY}")
            (size,) = struct.unpack("<Q", start)
            plausible = 2 <= size <= min(_MAX_HEADER, path.stat().st_size - 8)
            raw = fh.read(size) if plausible else b""
    except OSError as exc:
        raise ModelFileError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if not raw.startswith(b"{"):
        if start[:2] == b"PK" or start[:1] == b"\x80":
            raise ModelFileError(
                f"{path.name} is a pickle/torch.save file; napari-unet never loads those because they can run "
                "code. Ask for a napari-unet model file (.unet.safetensors)"
            )
        if plausible:
            raise ModelFileError(f"{path.name} is not a napari-unet model file (unreadable header); {_CHOOSE}")
        raise ModelFileError(f"{path.name} is not a napari-unet model file, or it is truncated; {_CHOOSE}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path.name} is not a napari-unet model file (unreadable header); {_CHOOSE}") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name} is not a napari-unet model file; {_CHOOSE}")
    return header


def _description_from_header(header: dict[str, Any], path: Path) -> ModelDescription:
    meta = header.get("__metadata__") or {}
    text = meta.get(_METADATA_KEY)
    if text is None:
        raise ModelFileError(
            f"{path.name} holds tensors but no napari-unet description; it was made by another tool: {_CHOOSE}"
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path.name}: the model description is not valid JSON; {_RECOPY}") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path.name}: the model description is not a JSON object; {_RECOPY}")
    return ModelDescription.from_dict(doc)
