"""What ImageJ sees in a TIFF file, read without tifffile: an independent check for the tests.

A deliberately independent, pure-Python reader of the first TIFF directory, so the tests
of the TIFF writer do not rely on tifffile's interpretation of what tifffile wrote. It
used to sit in the core (``napari_unet.core.io.tiff``), which never used it.
"""

from __future__ import annotations

import math
import os
import re
import struct
from typing import Any, BinaryIO

from napari_unet.core.io.tiff import ImageReadError

_TYPE_FORMATS = {
    1: "B", 2: "s", 3: "H", 4: "I", 5: "II", 6: "b", 7: "B", 8: "h",
    9: "i", 10: "ii", 11: "f", 12: "d", 13: "I", 16: "Q", 17: "q", 18: "Q",
}  # fmt: skip
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_WANTED_TAGS = {
    256: "width", 257: "height", 258: "bits_per_sample", 259: "compression", 262: "photometric",
    270: "description", 273: "strip_offsets", 277: "samples_per_pixel", 279: "strip_byte_counts",
    282: "x_resolution", 283: "y_resolution", 296: "resolution_unit", 339: "sample_format",
}  # fmt: skip
_MAX_IFDS = 1_000_000


def read_imagej_metadata(path: str | os.PathLike, /) -> dict[str, Any]:
    """Read the first TIFF directory and its ImageJ description without tifffile.

    A small, independent parser (``struct`` only) of the header and first
    image file directory (IFD) of a classic or BigTIFF file, in either byte
    order. It reports the tags that ImageJ uses to open a file, so tests can
    check "what Fiji sees" independently of tifffile.

    Parameters
    ----------
    path : path-like
        A TIFF file.

    Returns
    -------
    dict
        ``byteorder`` (``"<"`` or ``">"``), ``bigtiff`` (bool), ``n_ifds``
        (directories in the chain), and from the first IFD: ``width``,
        ``height``, ``bits_per_sample`` (int, or tuple for several samples),
        ``samples_per_pixel`` (default 1), ``sample_format`` (1 unsigned, 2
        signed, 3 float; default 1), ``compression`` (1 none, 8 zlib;
        default 1), ``photometric``, ``strip_offsets`` and
        ``strip_byte_counts`` (tuples), ``x_resolution`` and
        ``y_resolution`` (pixels per unit, float, or None),
        ``resolution_unit`` (1 none, 2 inch, 3 cm; None if absent),
        ``description`` (str or None); ``pixel_width`` and ``pixel_height``
        (``1 / resolution`` as ImageJ computes them, or None); ``imagej``
        (the ``key=value`` lines of an ImageJ description, with ints, floats
        and booleans converted, ``{}`` otherwise) and ``is_imagej``.

    Raises
    ------
    ImageReadError
        The file is missing, not a TIFF, or its first IFD is truncated.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "labels.tif"
    >>> _ = write_labels(path, np.ones((3, 8, 8), int), scale=(2.0, 0.5, 0.5))
    >>> meta = read_imagej_metadata(path)
    >>> meta["imagej"]["slices"], meta["imagej"]["spacing"], meta["pixel_width"]
    (3, 2.0, 0.5)
    """
    name = str(path)
    try:
        with open(path, "rb") as fh:
            return _parse_first_ifd(fh, os.fstat(fh.fileno()).st_size, name)
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read {name!r}: the file does not exist; check the name and the folder") from exc
    except (IsADirectoryError, PermissionError) as exc:
        raise ImageReadError(f"cannot read {name!r}: {exc.strerror}") from exc


def _parse_first_ifd(fh: BinaryIO, size: int, name: str) -> dict[str, Any]:
    def fail(reason: str) -> ImageReadError:
        return ImageReadError(f"cannot read {name!r}: {reason}; the file is not a valid TIFF or is incomplete")

    def read_at(offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > size:
            raise fail(f"data at byte {offset} lies beyond the end of the file ({size} bytes)")
        fh.seek(offset)
        return fh.read(n)

    header = read_at(0, 8) if size >= 8 else b""
    if header[:2] == b"II":
        bo = "<"
    elif header[:2] == b"MM":
        bo = ">"
    else:
        raise fail("no TIFF header (II or MM)")
    (version,) = struct.unpack(bo + "H", header[2:4])
    if version == 42:
        bigtiff, count_fmt, entry_fmt, offset_fmt, inline = False, "H", "HHI4s", "I", 4
        (first,) = struct.unpack(bo + "I", header[4:8])
    elif version == 43:
        bigtiff, count_fmt, entry_fmt, offset_fmt, inline = True, "Q", "HHQ8s", "Q", 8
        (first,) = struct.unpack(bo + "Q", read_at(8, 8))
    else:
        raise fail(f"unknown TIFF version {version}")
    count_size = struct.calcsize(count_fmt)
    entry_size = struct.calcsize(bo + entry_fmt)
    offset_size = struct.calcsize(offset_fmt)

    (n_entries,) = struct.unpack(bo + count_fmt, read_at(first, count_size))
    raw = read_at(first + count_size, n_entries * entry_size)
    tags: dict[str, Any] = {}
    for i in range(n_entries):
        code, dtype, count, value = struct.unpack_from(bo + entry_fmt, raw, i * entry_size)
        if code not in _WANTED_TAGS or dtype not in _TYPE_SIZES:
            continue
        nbytes = _TYPE_SIZES[dtype] * count
        if nbytes <= inline:
            payload = value[:nbytes]
        else:
            (offset,) = struct.unpack(bo + offset_fmt, value)
            payload = read_at(offset, nbytes)
        if dtype == 2:
            decoded: Any = payload.split(b"\x00", 1)[0].decode("utf-8", errors="replace")
        else:
            items = struct.unpack(f"{bo}{count * len(_TYPE_FORMATS[dtype])}{_TYPE_FORMATS[dtype][0]}", payload)
            if dtype in (5, 10):
                items = tuple(items[j] / items[j + 1] if items[j + 1] else math.nan for j in range(0, len(items), 2))
            decoded = items
        tags[_WANTED_TAGS[code]] = decoded

    # Walk the IFD chain to count directories (guarding against loops).
    n_ifds, offset, seen = 0, first, set()
    while offset and offset not in seen and n_ifds < _MAX_IFDS:
        seen.add(offset)
        n_ifds += 1
        (n,) = struct.unpack(bo + count_fmt, read_at(offset, count_size))
        (offset,) = struct.unpack(bo + offset_fmt, read_at(offset + count_size + n * entry_size, offset_size))

    def scalar(key: str, default: Any = None) -> Any:
        value = tags.get(key)
        if value is None:
            return default
        return value[0] if len(value) == 1 else tuple(value)

    description = tags.get("description")
    xres, yres = scalar("x_resolution"), scalar("y_resolution")
    imagej = _parse_imagej_description(description) if description else {}
    return {
        "byteorder": bo,
        "bigtiff": bigtiff,
        "n_ifds": n_ifds,
        "width": scalar("width"),
        "height": scalar("height"),
        "bits_per_sample": scalar("bits_per_sample", 1),
        "samples_per_pixel": scalar("samples_per_pixel", 1),
        "sample_format": scalar("sample_format", 1),
        "compression": scalar("compression", 1),
        "photometric": scalar("photometric"),
        "strip_offsets": tuple(tags.get("strip_offsets", ())),
        "strip_byte_counts": tuple(tags.get("strip_byte_counts", ())),
        "x_resolution": xres,
        "y_resolution": yres,
        "resolution_unit": scalar("resolution_unit"),
        "description": description,
        "pixel_width": 1.0 / xres if xres else None,
        "pixel_height": 1.0 / yres if yres else None,
        "imagej": imagej,
        "is_imagej": bool(imagej),
    }


_INT = re.compile(r"[+-]?\d+")


def _parse_imagej_description(description: str) -> dict[str, Any]:
    """Parse ``ImageJ=1.11a\\nimages=3\\n...`` into a dict; ``{}`` if not ImageJ."""
    if not description.startswith("ImageJ="):
        return {}
    result: dict[str, Any] = {}
    for line in description.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key:
            continue
        value = value.strip()
        converted: Any
        if _INT.fullmatch(value):
            converted = int(value)
        elif value in ("true", "false"):
            converted = value == "true"
        else:
            try:
                converted = float(value)
            except ValueError:
                converted = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
        result[key.strip()] = converted
    # "ImageJ=1.11a" is a version string, never a number.
    result["ImageJ"] = description.splitlines()[0].partition("=")[2]
    return result
