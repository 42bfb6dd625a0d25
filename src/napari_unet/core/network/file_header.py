"""The header of a safetensors model file, read and checked without reading the weights.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``{"__metadata__": {...}, NAME: {"dtype", "shape", "data_offsets"}, ...}``)
and the tensors' bytes. Everything here reads at most the header, so a file
is judged before any memory is reserved for what it claims to hold.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from napari_unet.core.network.file_errors import CHOOSE as _CHOOSE
from napari_unet.core.network.file_errors import RECOPY as _RECOPY
from napari_unet.core.network.file_errors import ModelFileError, short

#: A safetensors header larger than this is refused (4 MB; the shipped models' headers are under 50 kB).
MAX_HEADER_BYTES = 4 * 1024 * 1024
#: A header listing more tensors than this is refused (a U-Net of depth 8 with normalisation has 196).
MAX_TENSORS = 1024
#: What each stored tensor dtype (safetensors' names) may hold: floating weights or integer counters.
_FLOAT_DTYPES = {"F32": 4, "F16": 2}
_INT_DTYPES = {"I64": 8}


def _header_size(path: Path) -> int:
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
    return int(size)


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without its data; at most :data:`MAX_HEADER_BYTES`.

    Raises
    ------
    ModelFileError
        If the file is missing, a folder, empty, a pickle, not a safetensors
        file, truncated in its header, or its header is too large or not JSON.
    """
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
            plausible = 2 <= size <= path.stat().st_size - 8
            raw = fh.read(min(size, MAX_HEADER_BYTES)) if plausible else b""
    except OSError as exc:
        raise ModelFileError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if size > MAX_HEADER_BYTES and raw.startswith(b"{"):
        raise ModelFileError(
            f"{path.name} has a header of {size} bytes, more than the {MAX_HEADER_BYTES} a model file may have; "
            f"{_RECOPY}"
        )
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path.name} is not a napari-unet model file (unreadable header); {_CHOOSE}") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name} is not a napari-unet model file; {_CHOOSE}")
    return header


def check_tensors(header: dict[str, Any], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a header whose tensors differ from ``expected``, or whose data is not exactly the rest of the file.

    Parameters
    ----------
    header : dict
        The header, from :func:`read_header`.
    expected : dict of str to torch.Tensor
        The state dict the file must hold (tensors on the ``meta`` device
        will do: only names, shapes and dtypes are compared).
    path : pathlib.Path
        The file, for its name and size.

    Raises
    ------
    ModelFileError
        If the header lists more than :data:`MAX_TENSORS` tensors, lacks or
        adds a tensor, gives one another shape or a dtype it may not have
        (``F32``/``F16`` for floating point, ``I64`` for integers), if the
        tensors' bytes overlap or leave gaps, or if the file holds fewer or
        more bytes than the header describes.
    """
    tensors = {key: value for key, value in header.items() if key != "__metadata__"}
    if len(tensors) > MAX_TENSORS:
        raise ModelFileError(f"{path.name} lists {len(tensors)} tensors, more than any U-Net has; {_RECOPY}")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path.name}: the weights do not match the described architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); {_RECOPY}"
        )
    spans = sorted(_tensor_span(key, entry, expected[key], path) for key, entry in tensors.items())
    offset = 0
    for begin, end, key in spans:
        if begin != offset:
            raise ModelFileError(f"{path.name}: the bytes of weight {key} overlap or leave a gap; {_RECOPY}")
        offset = end
    available = path.stat().st_size - 8 - _header_size(path)
    if offset > available:
        raise ModelFileError(
            f"{path.name} is truncated: its header describes {offset} bytes of weights but only {available} "
            f"follow; {_RECOPY}"
        )
    if offset < available:
        raise ModelFileError(f"{path.name} has {available - offset} bytes after its weights; {_RECOPY}")


def _tensor_span(key: str, entry: Any, expected: torch.Tensor, path: Path) -> tuple[int, int, str]:
    """``(begin, end, key)`` of one tensor's bytes, after checking its entry against ``expected``."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{path.name}: the header entry of weight {key} is malformed; {_RECOPY}")
    sizes = _FLOAT_DTYPES if expected.is_floating_point() else _INT_DTYPES
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in sizes:
        raise ModelFileError(
            f"{path.name}: weight {key} is stored as {short(dtype)}, expected one of {sorted(sizes)}; {_RECOPY}"
        )
    if not isinstance(shape, list) or not all(type(d) is int for d in shape) or shape != list(expected.shape):
        raise ModelFileError(
            f"{path.name}: weight {key} has shape {short(shape)}, expected {tuple(expected.shape)}; {_RECOPY}"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or offsets[1] - offsets[0] != expected.numel() * sizes[dtype]
    ):
        raise ModelFileError(f"{path.name}: the byte range of weight {key} is malformed; {_RECOPY}")
    return offsets[0], offsets[1], key
