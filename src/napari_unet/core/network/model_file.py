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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.io.atomic import atomic_write_bytes
from napari_unet.core.network.file_errors import CHOOSE as _CHOOSE
from napari_unet.core.network.file_errors import RECOPY as _RECOPY
from napari_unet.core.network.file_errors import ModelFileError, short
from napari_unet.core.network.file_header import check_tensors, read_header
from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.normalization import Normalization
from napari_unet.core.network.unet import UNet, UNetConfig

FORMAT_NAME = "napari-unet-model"
#: Newest format this version reads and writes. Version 2 added ``object_diameter_px``, version 3
#: the instance rule's ``foreground_threshold`` and ``background_intensity``; a file is written
#: with the oldest version that holds what it uses, so older versions keep reading the others.
FORMAT_VERSION = 3
FILE_SUFFIX = ".unet.safetensors"
_METADATA_KEY = "napari_unet"
#: Deepest nesting of lists and objects allowed in the training history.
MAX_HISTORY_NESTING = 32
#: Entries of the description: required, then optional (older files may lack them).
_REQUIRED_KEYS = (
    "format",
    "format_version",
    "architecture",
    "normalization",
    "channel_names",
    "class_names",
    "instance_rule",
)
_OPTIONAL_KEYS = (
    "name",
    "description",
    "pixel_size_um",
    "object_diameter_px",
    "background_intensity",
    "training_history",
    "saved",
    "weights_dtype",
)


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
    object_diameter_px : float or None
        Median equivalent diameter, in pixels, of the objects the model was
        trained on (:func:`~napari_unet.core.network.object_size.median_diameter`);
        images are resampled so their objects have this size before the
        network sees them. None for models that do not record it (they are
        applied to images as they are).
    background_intensity : tuple of float or None
        The 10th and 90th percentiles, over the training images, of each
        image's median intensity after normalisation (0-1): where the
        background of the images it knows lies (fluorescence near 0,
        brightfield near 1). Segment says so when an image lies far outside
        (:func:`~napari_unet.core.inference.model_fit.background_notice`).
        None: not recorded.
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
    object_diameter_px: float | None = None
    background_intensity: tuple[float, float] | None = None
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
        if self.object_diameter_px is not None:
            self.object_diameter_px = _positive(self.object_diameter_px, "object_diameter_px")
        self.background_intensity = _intensity_range(self.background_intensity)

    def format_version(self) -> int:
        """The oldest file format version that holds this description."""
        if self.instance_rule.foreground_threshold is not None or self.background_intensity is not None:
            return 3
        return 2 if self.object_diameter_px is not None else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON document stored in a model file."""
        doc = {
            "format": FORMAT_NAME,
            "format_version": self.format_version(),
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
        if self.object_diameter_px is not None:
            doc["object_diameter_px"] = self.object_diameter_px
        if self.background_intensity is not None:
            doc["background_intensity"] = list(self.background_intensity)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ModelDescription:
        """Parse and check the JSON document of a model file.

        Raises
        ------
        ModelFileError
            If the document is not a napari-unet description, is of a newer
            format version, lacks an entry, has an unknown one, or holds a value
            of the wrong type or outside its limits (see :class:`UNetConfig`).
        """
        _check_format(doc)
        try:
            for key in ("saved", "weights_dtype"):  # written by save_model, not kept: only their type is checked
                _text(doc, key, "")
            return cls(
                config=UNetConfig.from_dict(doc["architecture"]),
                normalization=Normalization.from_dict(doc["normalization"]),
                channel_names=_names(doc, "channel_names"),
                class_names=_names(doc, "class_names"),
                instance_rule=InstanceRule.from_dict(doc["instance_rule"]),
                name=_text(doc, "name", "unnamed model"),
                description=_text(doc, "description", ""),
                pixel_size_um=_pixel_size(doc.get("pixel_size_um")),
                object_diameter_px=_optional_positive(doc.get("object_diameter_px"), "object_diameter_px"),
                background_intensity=doc.get("background_intensity"),
                training_history=_history(doc.get("training_history", [])),
            )
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ModelFileError(f"the model description is incomplete or invalid: {exc}; {_RECOPY}") from exc


def _check_format(doc: Any) -> None:
    """Refuse a document that is not a napari-unet description this version reads, or lacks or adds entries."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"this is not a napari-unet model file (no napari-unet description inside); {_CHOOSE}")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"the model description has an invalid format version {version!r}; {_RECOPY}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"this model file has format version {version}, newer than this napari-unet understands "
            f"({FORMAT_VERSION}); update napari-unet (pip install -U napari-unet-toolkit)"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in doc]
    unknown = sorted(str(key) for key in set(doc) - {*_REQUIRED_KEYS, *_OPTIONAL_KEYS})
    if missing or unknown:
        what = f"lacks {missing}" if missing else f"has unknown entries {unknown[:5]}"
        raise ModelFileError(f"the model description is incomplete or invalid: it {what}; {_RECOPY}")


def _names(doc: dict[str, Any], key: str) -> list[str]:
    """The list of names under ``key``; each must be text."""
    names = doc[key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{key} must be a list of names, got {short(names)}")
    return list(names)


def _text(doc: dict[str, Any], key: str, default: str) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, got {short(value)}")
    return value


def _pixel_size(value: Any) -> float | None:
    return _optional_positive(value, "pixel_size_um")


def _intensity_range(value: Any) -> tuple[float, float] | None:
    """``background_intensity``: None, or two numbers from 0 to 1, the first not above the second."""
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(not isinstance(v, bool) and isinstance(v, int | float) and 0.0 <= v <= 1.0 for v in value)
        or value[0] > value[1]
    ):
        raise ValueError(f"background_intensity must be two numbers from 0 to 1, low first, got {short(value)}")
    return float(value[0]), float(value[1])


def _optional_positive(value: Any, key: str) -> float | None:
    return None if value is None else _positive(value, key)


def _positive(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(f"{key} must be a positive number or null, got {short(value)}")
    return float(value)


def _history(value: Any) -> list[dict[str, Any]]:
    """The training history: a list of objects, nested at most :data:`MAX_HISTORY_NESTING` deep."""
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ValueError(f"training_history must be a list of objects, got {short(value)}")
    level, depth = list(value), 1
    while level:
        if depth > MAX_HISTORY_NESTING:
            raise ValueError(f"training_history is nested more than {MAX_HISTORY_NESTING} levels deep")
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        level, depth = children, depth + 1
    return list(value)


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

    def with_instance_rule(self, rule: InstanceRule, /) -> SegmentationModel:
        """This model with another instance rule: the same network (not copied), a new description.

        For segmenting with other thresholds than the file's (the user's
        seed threshold) without changing the model itself.

        Parameters
        ----------
        rule : InstanceRule
            The rule to use; its classes must exist in the model.

        Returns
        -------
        SegmentationModel
            Shares this model's network (training one trains the other) and
            the rest of its description (history, normalisation): treat it
            as a read-only view.

        Raises
        ------
        ValueError
            If ``rule`` names a class the model lacks.
        """
        twin = SegmentationModel(replace(self.description, instance_rule=rule), self.network)
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
    header = read_header(Path(path))
    return _description_from_header(header, Path(path))


def load_model(path: str | os.PathLike, /, *, device: str | torch.device = "cpu") -> SegmentationModel:
    """Load a model file safely.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_model`, or a bioimage.io model package
        (``.zip``) whose network is napari-unet's U-Net (see
        :func:`~napari_unet.core.network.bioimageio_import.import_bioimageio`).
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
        newer format version, if its description is incomplete, invalid or
        beyond the limits of :class:`UNetConfig`, or if its weights do not
        match the description. The message says what to do.

    Notes
    -----
    No code from the file is ever executed: the file is parsed as JSON plus
    raw tensor bytes. A pickle (``torch.save``) file is refused. Nothing is
    allocated for the network before the header is checked: the header is at
    most :data:`~.file_header.MAX_HEADER_BYTES` and lists at most :data:`~.file_header.MAX_TENSORS`
    tensors, the description is within the architecture's limits, and every
    tensor's name, shape and dtype match those of the described network
    (built on PyTorch's ``meta`` device, which holds no data) and lie inside
    the file. Loading therefore needs no more memory than the weights the
    file really holds.
    """
    path = Path(path)
    if path.suffix.lower() == ".zip" and path.is_file():  # a bioimage.io package
        from napari_unet.core.network.bioimageio_import import import_bioimageio

        return import_bioimageio(path, device=device)
    header = read_header(path)
    description = _description_from_header(header, path)
    expected = _expected_tensors(description.config)
    check_tensors(header, expected, path)
    network = UNet(description.config, initialise=False)  # every weight comes from the file
    network.load_state_dict(_read_weights(path, expected))
    network.to(device)
    model = SegmentationModel(description, network)
    model.source = path
    return model


def expected_tensors(config: UNetConfig) -> dict[str, torch.Tensor]:
    """The state dict of the network ``config`` describes, on the ``meta`` device: shapes and dtypes, no data."""
    with torch.device("meta"):
        return UNet(config, initialise=False).state_dict()


_expected_tensors = expected_tensors


def _read_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of a checked file, one tensor at a time from a memory map, in the network's dtypes."""
    from safetensors import SafetensorError, safe_open

    weights = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key, like in expected.items():
                value = fh.get_tensor(key)
                if value.is_floating_point() and not torch.isfinite(value).all():
                    raise ModelFileError(
                        f"{path.name}: weight {key} contains NaN or Inf; the model is broken: {_RECOPY}"
                    )
                weights[key] = value.to(like.dtype)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(
            f"{path.name}: the weights could not be read ({exc}); the file may be truncated: {_RECOPY}"
        ) from exc
    return weights


def _description_from_header(header: dict[str, Any], path: Path) -> ModelDescription:
    meta = header.get("__metadata__") or {}
    text = meta.get(_METADATA_KEY) if isinstance(meta, dict) else None
    if text is None:
        raise ModelFileError(
            f"{path.name} holds tensors but no napari-unet description; it was made by another tool: {_CHOOSE}"
        )
    try:
        doc = json.loads(text) if isinstance(text, str) else None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path.name}: the model description is not valid JSON; {_RECOPY}") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path.name}: the model description is not a JSON object; {_RECOPY}")
    return ModelDescription.from_dict(doc)
