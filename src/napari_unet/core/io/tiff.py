"""Reading images and writing label / probability images as TIFF files Fiji opens.

Reading goes through :mod:`tifffile` and reports the axes and the physical pixel
size found in ImageJ, OME or TIFF resolution metadata. Writing produces
ImageJ hyperstack TIFFs (what Fiji's *File > Open* understands natively)
whenever ImageJ can hold the data type, and always goes through
:func:`~napari_unet.core.io.atomic.atomic_output`, so a failed write never leaves
a half-written file.

The tests check what Fiji sees with an independent reader (``tests/imagej_reader.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import tifffile

from napari_unet.core.errors import UserError
from napari_unet.core.io.atomic import OutputError, atomic_output, disk_full_error, is_disk_full
from napari_unet.core.io.lut import imagej_lut_metadata
from napari_unet.core.io.memory import BLOCKWISE_ADVICE, refuse_if_too_large

__all__ = [
    "ImageHeader",
    "ImageInfo",
    "ImageReadError",
    "ImageSeriesWarning",
    "LabelsDtypeWarning",
    "LabelsWriteResult",
    "read_header",
    "read_image",
    "write_labels",
    "write_probabilities",
]

Compression = Literal["zlib", "none"]

#: Axis letters used in :attr:`ImageInfo.axes` and accepted by the writers.
_KNOWN_AXES = "TZCYXS"
#: ImageJ hyperstack order.
_IMAGEJ_ORDER = "TZCYX"
#: Label image layouts accepted by :func:`write_labels`, by number of dimensions.
_LABEL_AXES = {2: ("YX",), 3: ("ZYX", "TYX"), 4: ("TZYX",)}
#: Centimetres per unit, for the TIFF ResolutionUnit=CENTIMETER of plain files.
_CM_PER_UNIT = {"nm": 1e-7, "um": 1e-4, "mm": 0.1, "cm": 1.0, "m": 100.0}
#: Spellings of "micrometre" found in ImageJ and OME metadata.
_MICRON = {"um", "µm", "μm", "micron", "microns", "micrometer", "micrometre", "\\u00b5m"}
#: Micrometres per OME length unit.
_UM_PER_OME_UNIT = {"nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4, "pm": 1e-6}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ImageReadError(UserError, ValueError):
    """An image file cannot be read; the message names the file and says what to do."""


class ImageSeriesWarning(UserWarning):
    """A TIFF file holds several images (series); only the first is read."""


class LabelsDtypeWarning(UserWarning):
    """Labels need more than 16 bits, so the file is not an ImageJ hyperstack."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image` found out about an image besides its pixels.

    Attributes
    ----------
    axes : str
        One letter per axis of the returned array, from ``"TZCYXS"``, e.g.
        ``"YX"``, ``"ZYX"``, ``"TYX"``, ``"CYX"`` or ``"YXS"`` (RGB).
    pixel_size : tuple of float or None
        Physical size of a pixel along each spatial axis (the ``Z``, ``Y``
        and ``X`` letters of `axes`, in that order), in `unit`; None if the
        file holds no calibration.
    unit : str or None
        Unit of `pixel_size` (``"um"`` for micrometres, whatever the
        spelling in the file); None when `pixel_size` is None.
    rgb : bool
        The last axis holds the red, green, blue (and alpha) samples of a
        colour image.
    """

    axes: str
    pixel_size: tuple[float, ...] | None
    unit: str | None
    rgb: bool

    @property
    def spatial_axes(self) -> str:
        """The spatial axis letters, e.g. ``"ZYX"``; one per `pixel_size` entry."""
        return "".join(a for a in self.axes if a in "ZYX")


@dataclass(frozen=True)
class LabelsWriteResult:
    """What :func:`write_labels` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The file written.
    dtype : numpy.dtype
        Data type stored in the file (the smallest unsigned type that fits).
    imagej : bool
        The file is an ImageJ hyperstack (uint8 or uint16 labels).
    compression : {"zlib", "none"}
        Compression actually used (ImageJ stacks are never compressed).
    warning : str or None
        The :class:`LabelsDtypeWarning` message, if one was issued.
    """

    path: Path
    dtype: np.dtype
    imagej: bool
    compression: str
    warning: str | None = None


@dataclass(frozen=True)
class ImageHeader:
    """Shape, type and axes of the image :func:`read_image` would return, from the file's header.

    Attributes
    ----------
    shape : tuple of int
        Shape of the array (RGB samples last).
    dtype : numpy.dtype
        Pixel type.
    axes : str
        One letter per axis, as :attr:`ImageInfo.axes`.
    rgb : bool
        The last axis holds colour samples.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    rgb: bool

    @property
    def nbytes(self) -> int:
        """Bytes of the pixels once read."""
        return math.prod(self.shape) * self.dtype.itemsize


# --------------------------------------------------------------------------- reading


def read_header(path: str | os.PathLike, /) -> ImageHeader | None:
    """What :func:`read_image` would return for ``path``, without reading the pixels.

    Returns
    -------
    ImageHeader or None
        None when the file cannot be opened as a TIFF with an image
        (:func:`read_image` then says why).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "labels.tif"
    >>> _ = write_labels(path, np.zeros((3, 40, 50), dtype=np.uint8))
    >>> read_header(path)
    ImageHeader(shape=(3, 40, 50), dtype=dtype('uint8'), axes='ZYX', rgb=False)
    """
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return None
            series = tif.series[0]
            return _header(tuple(series.shape), series.dtype, series.axes, series.keyframe.photometric)
    except Exception:  # tifffile, struct, OSError: read_image explains
        return None


def _header(shape: tuple[int, ...], dtype: Any, axes: str, photometric: Any) -> ImageHeader:
    """The shape and axes :func:`read_image` returns for a series of ``shape`` and ``axes``."""
    rgb = photometric == tifffile.PHOTOMETRIC.RGB and "S" in axes and shape[axes.index("S")] in (3, 4)
    if "S" in axes and axes[-1] != "S":
        s = axes.index("S")
        shape = (*shape[:s], *shape[s + 1 :], shape[s])
        axes = axes.replace("S", "") + "S"
    return ImageHeader(shape=shape, dtype=np.dtype(dtype), axes=_name_unknown_axes(axes), rgb=bool(rgb))


#: Series names of the side images of slide scanners (Aperio SVS, ...): not warned about.
_SIDE_IMAGES = ("thumbnail", "label", "macro", "overview")


def _other_series(tif: tifffile.TiffFile) -> list[str]:
    """Shape and axes of the series after the first, slide scanners' side images left out."""
    return [
        f"{_shape_text(series.shape)} {series.axes}"
        for series in tif.series[1:]
        if not str(series.name or "").strip().lower().startswith(_SIDE_IMAGES)
    ]


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape)


def _refuse_too_large(name: str, series: Any) -> None:
    """Refuse (before reading) a series whose pixels exceed the available memory."""
    shape = _shape_text(series.shape)
    refuse_if_too_large(
        math.prod(series.shape) * np.dtype(series.dtype).itemsize,
        what=f"reading {name!r} whole ({shape} {np.dtype(series.dtype)} pixels)",
        advice=f"{BLOCKWISE_ADVICE}; to train on it, crop a region first",
    )


def read_image(path: str | os.PathLike, /) -> tuple[np.ndarray, ImageInfo]:
    """Read the first image series of a TIFF file.

    Parameters
    ----------
    path : path-like
        A TIFF, ImageJ hyperstack, OME-TIFF or BigTIFF file.

    Returns
    -------
    data : numpy.ndarray
        The pixels, with length-1 axes removed (as tifffile does); RGB
        samples are always on the last axis.
    info : ImageInfo
        Axes, pixel size, unit and whether the image is RGB.

    Raises
    ------
    ImageReadError
        The file is missing, is a folder, is not a TIFF, or is damaged.
    ImageTooLargeError
        Its pixels would need more memory than is available (found from the
        header, before reading them); the message points to the
        block-by-block path.

    Notes
    -----
    The pixel size comes from, in order: the ImageJ description (``unit``,
    ``spacing``) with the X/YResolution tags; the JSON description that
    :func:`write_labels` writes into non-ImageJ files; OME-XML
    ``PhysicalSize*``; X/YResolution with ResolutionUnit=CENTIMETER
    (reported in ``"um"``). Resolutions in dots per inch are ignored: in
    practice they are scanner or screen defaults (72 dpi), not a microscope
    calibration. When only X and Y are known, Z is 1 unit, as in Fiji.

    A file holding several images (TIFF series, e.g. an OME-TIFF of many
    positions) gives the first, with an :class:`ImageSeriesWarning` naming
    the others; the side images of slide scanners (thumbnail, label, macro)
    are not mentioned.

    Axes that tifffile cannot name (``I``, ``Q``, ...) become ``Z`` (Fiji
    opens an unlabelled stack as Z-slices), then ``T``, then ``C``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "labels.tif"
    >>> _ = write_labels(path, np.eye(4, dtype=int), scale=(0.5, 0.5))
    >>> data, info = read_image(path)
    >>> info
    ImageInfo(axes='YX', pixel_size=(0.5, 0.5), unit='um', rgb=False)
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise ImageReadError(f"cannot read {name!r}: the file does not exist; check the name and the folder")
    if path.is_dir():
        raise ImageReadError(f"cannot read {name!r}: it is a folder; choose a TIFF file inside it")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except PermissionError as exc:
        raise ImageReadError(f"cannot read {name!r}: no permission to open it; check the file's permissions") from exc
    except OSError as exc:
        raise ImageReadError(f"cannot read {name!r}: {exc.strerror or exc}") from exc
    if magic not in _TIFF_MAGIC:
        raise ImageReadError(
            f"cannot read {name!r}: it is not a TIFF file; convert it to TIFF "
            "(e.g. in Fiji: File > Save As > Tiff...) and open that instead"
        )
    damage = _DamageLog()
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addHandler(damage)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageReadError(f"cannot read {name!r}: the TIFF file holds no image")
            series = tif.series[0]
            _refuse_too_large(name, series)
            others = _other_series(tif)
            data = np.asarray(series.asarray())
            axes = series.axes
            photometric = series.keyframe.photometric
            pixel_size, unit = _calibration(tif, series.keyframe)
            if damage.messages:
                raise ValueError(damage.messages[0])
            if tif.is_imagej:
                _check_imagej_planes(data, axes, tif.imagej_metadata or {})
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile, zlib, struct, numpy: all mean a damaged file
        raise ImageReadError(
            f"cannot read {name!r}: the TIFF file is damaged or incomplete ({exc}); "
            "copy it again from its source, or re-save it in Fiji"
        ) from exc
    finally:
        tifffile_log.removeHandler(damage)
    if others:
        warnings.warn(
            f"{name!r} holds {len(others) + 1} images (TIFF series); only the first, {_shape_text(data.shape)} "
            f"{axes}, is read, not {', '.join(others)}. To use the others, save each to its own file "
            "(in Fiji: File > Import > Bio-Formats, choose the series, then File > Save As > Tiff...)",
            ImageSeriesWarning,
            stacklevel=2,
        )

    if data.ndim != len(axes):  # defensive: should not happen with tifffile
        raise ImageReadError(f"cannot read {name!r}: its axes {axes!r} do not match its shape {data.shape}")
    rgb = photometric == tifffile.PHOTOMETRIC.RGB and "S" in axes and data.shape[axes.index("S")] in (3, 4)
    if "S" in axes and axes[-1] != "S":
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    axes = _name_unknown_axes(axes)
    spatial = [a for a in axes if a in "ZYX"]
    if pixel_size is not None:
        sizes = dict(zip("ZYX", pixel_size))
    spatial_sizes = None if pixel_size is None else tuple(sizes[a] for a in spatial)
    return data, ImageInfo(axes=axes, pixel_size=spatial_sizes, unit=unit if spatial_sizes else None, rgb=bool(rgb))


class _DamageLog(logging.Handler):
    """Collect tifffile's reports of a damaged file, from this thread only.

    On a truncated or corrupt file tifffile often logs an error and returns
    whatever pages it could read (e.g. one plane of a stack); those log
    records are the only sign of it.
    """

    _DAMAGE = re.compile(r"corrupt|invalid (?:page offset|offset to page|next page)", re.IGNORECASE)

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            message = record.getMessage()
            if self._DAMAGE.search(message):
                self.messages.append(message)


def _check_imagej_planes(data: np.ndarray, axes: str, meta: dict[str, Any]) -> None:
    plane = math.prod(n for a, n in zip(axes, data.shape) if a in "YXS")
    found = data.size // plane if plane else 0
    expected = meta.get("images", 1)
    if isinstance(expected, int) and found < expected:
        raise ValueError(f"the ImageJ header announces {expected} images but only {found} are in the file")


def _name_unknown_axes(axes: str) -> str:
    out = []
    for a in axes:
        if a not in _KNOWN_AXES:
            a = next((c for c in "ZTC" if c not in axes and c not in out), a)
        out.append(a)
    return "".join(out)


def _calibration(tif: tifffile.TiffFile, page: Any) -> tuple[tuple[float, float, float] | None, str | None]:
    """Return ``((z, y, x), unit)`` pixel sizes, or ``(None, None)``."""
    xres, yres = _resolution(page)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = meta.get("unit")
        if isinstance(unit, str) and unit.strip() and unit.strip().lower() not in ("pixel", "pixels"):
            if xres is not None and yres is not None:
                z = _positive(meta.get("spacing")) or 1.0
                return (_tidy(z), _tidy(1 / yres), _tidy(1 / xres)), _normalise_unit(unit)
    shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else None
    if shaped and isinstance(shaped.get("pixel_size"), dict) and isinstance(shaped.get("unit"), str):
        sizes = {a: _positive(v) for a, v in shaped["pixel_size"].items()}
        if all(sizes.get(a) for a in "YX"):
            y, x = sizes["Y"], sizes["X"]
            assert y is not None and x is not None  # checked just above
            return (sizes.get("Z") or 1.0, y, x), shaped["unit"]
    if tif.is_ome and tif.ome_metadata:
        found = _ome_calibration(tif.ome_metadata)
        if found is not None:
            return found
    if page.resolutionunit == tifffile.RESUNIT.CENTIMETER and xres is not None and yres is not None:
        return (1.0, _tidy(1e4 / yres), _tidy(1e4 / xres)), "um"
    return None, None


def _resolution(page: Any) -> tuple[float | None, float | None]:
    values = []
    for code in (282, 283):
        tag = page.tags.get(code)
        try:
            num, den = tag.value
            values.append(num / den if num > 0 and den > 0 else None)
        except (AttributeError, TypeError, ValueError):
            values.append(None)
    return values[0], values[1]


def _ome_calibration(xml: str) -> tuple[tuple[float, float, float], str] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes: dict[str, float] = {}
    for a in "ZYX":
        value = _positive(pixels.get(f"PhysicalSize{a}"))
        if value is None:
            continue
        factor = _UM_PER_OME_UNIT.get(_normalise_unit(pixels.get(f"PhysicalSize{a}Unit", "µm")))
        if factor is None:
            return None
        sizes[a] = _tidy(value * factor)
    if "X" not in sizes:
        return None
    sizes.setdefault("Y", sizes["X"])
    return (sizes.get("Z", 1.0), sizes["Y"], sizes["X"]), "um"


def _positive(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _tidy(value: float) -> float:
    """Drop the noise of a rational round trip: 0.30000000000000004 -> 0.3."""
    return float(f"{value:.10g}")


def _normalise_unit(unit: str) -> str:
    unit = unit.strip()
    return "um" if unit.lower() in _MICRON else unit


# --------------------------------------------------------------------------- writing


def write_labels(
    path: str | os.PathLike,
    labels: Any,
    /,
    *,
    axes: str | None = None,
    scale: tuple[float, ...] | None = None,
    unit: str = "um",
    overwrite: bool = False,
    compression: Compression = "zlib",
    lut: bool = True,
) -> LabelsWriteResult:
    """Write a label image as a TIFF that Fiji opens with its calibration.

    Parameters
    ----------
    path : path-like
        Destination file; its folder must exist.
    labels : array-like
        Label image shaped (Y, X), (Z, Y, X), (T, Y, X) or (T, Z, Y, X), with
        non-negative integer values (0 = background). Booleans are written
        as 0/1; floats are accepted only if every value is a whole number.
    axes : str, optional
        ``"YX"``, ``"ZYX"``, ``"TYX"`` or ``"TZYX"``. Default: from the
        number of dimensions (3-D means ``"ZYX"``).
    scale : tuple of float, optional
        Pixel size in `unit`, either one value per spatial axis (Z, Y, X
        present in `axes`) or one per axis, like napari's ``layer.scale``
        (the T value is then ignored). None: no calibration is written.
    unit : str
        Length unit of `scale`, e.g. ``"um"`` or ``"nm"``; ignored without
        `scale`.
    overwrite : bool
        Replace an existing file. If False, an existing `path` raises
        :class:`~napari_unet.core.io.atomic.OutputError` and is left untouched.
    compression : {"zlib", "none"}
        Compression of 2-D ImageJ files and of 32/64-bit files; ImageJ
        stacks are always written uncompressed (see Notes).
    lut : bool
        Embed a glasbey-like lookup table in ImageJ files (8/16-bit), so
        Fiji shows each object in its own colour on black
        (:func:`~napari_unet.core.io.lut.imagej_lut_metadata`).

    Returns
    -------
    LabelsWriteResult
        Path, stored dtype, whether the file is an ImageJ hyperstack, the
        compression used and the warning message, if any.

    Raises
    ------
    ValueError
        Negative, non-integral or non-finite labels; empty array; bad
        `axes`, `scale`, `unit` or `compression`.
    TypeError
        Labels that are not numbers (complex, strings, objects).
    OutputError
        The folder is missing or not writable, the disk is full, or the file
        exists and `overwrite` is False. Nothing is written in any case.

    Warns
    -----
    LabelsDtypeWarning
        Labels above 65535 need 32 (or 64) bits, which the ImageJ hyperstack
        format cannot hold: a plain TIFF is written instead, which Fiji opens
        as a 32-bit float image (64-bit labels cannot be opened by Fiji).

    Notes
    -----
    The data are stored in the smallest unsigned type that holds the largest
    label. uint8 and uint16 labels become an ImageJ hyperstack: the
    description carries the axes (``slices``/``frames``), ``unit`` and
    ``spacing`` (Z), and X/YResolution hold pixels per unit, as Fiji writes
    them. Fiji's own TIFF reader reads the planes of an ImageJ stack as one
    contiguous block starting at the first plane and ignores the other
    directories, so a compressed ImageJ stack would open as garbage; stacks
    are therefore written uncompressed. Plain (32/64-bit) files store the
    X/Y resolution in pixels per centimetre (ResolutionUnit=CENTIMETER, the
    TIFF way Fiji understands) and the axes, unit and all pixel sizes in a
    JSON description that :func:`read_image` reads back.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> labels = np.zeros((2, 64, 64), dtype=np.int64)
    >>> labels[:, 10:20, 10:20] = 300
    >>> path = Path(tempfile.mkdtemp()) / "labels.tif"
    >>> result = write_labels(path, labels, scale=(2.0, 0.5, 0.5))
    >>> result.dtype, result.imagej, result.compression
    (dtype('uint16'), True, 'none')
    """
    path = Path(path)
    data, dtype = _label_array(labels)
    axes = _check_label_axes(axes, data.ndim)
    sizes = _spatial_scale(scale, axes)
    unit = _check_unit(unit) if sizes is not None else unit
    codec = _check_compression(compression)
    data = data.astype(dtype, copy=False)

    if dtype.itemsize <= 2:
        stack = math.prod(n for a, n in zip(axes, data.shape) if a in "TZ") > 1
        used = "none" if stack else codec
        with _tiff_output(path, overwrite=overwrite, size=data.nbytes if used == "none" else None) as fh:
            extra = imagej_lut_metadata(int(data.max(initial=0))) if lut else None
            _write_imagej(fh, data, axes, sizes, unit, compression=used, extra_metadata=extra)
        return LabelsWriteResult(path=path, dtype=dtype, imagej=True, compression=used)

    if dtype == np.uint32:
        message = (
            f"the labels go up to {int(data.max())}, more than the 65535 that an ImageJ hyperstack can hold; "
            f"{str(path)!r} is a plain 32-bit unsigned TIFF, which Fiji opens as a 32-bit (float) image "
            "without Z spacing or T/Z axes (exact up to label 16777216). Relabel to fewer objects for a "
            "16-bit ImageJ file"
        )
    else:
        message = (
            f"the labels go up to {int(data.max())}, more than 32 bits can hold; {str(path)!r} is a plain "
            "64-bit unsigned TIFF, which Fiji cannot open (tifffile and napari can). Relabel the objects "
            "consecutively to fit 32 bits"
        )
    # Warn before writing: if warnings are errors, nothing is written.
    warnings.warn(message, LabelsDtypeWarning, stacklevel=2)
    with _tiff_output(path, overwrite=overwrite, size=data.nbytes if codec == "none" else None) as fh:
        _write_plain(fh, data, axes, sizes, unit, compression=codec)
    return LabelsWriteResult(path=path, dtype=dtype, imagej=False, compression=codec, warning=message)


def write_probabilities(
    path: str | os.PathLike,
    probabilities: Any,
    /,
    *,
    axes: str | None = None,
    scale: tuple[float, ...] | None = None,
    unit: str = "um",
    overwrite: bool = False,
) -> Path:
    """Write class probabilities as a float32 ImageJ hyperstack (classes as channels).

    Parameters
    ----------
    path : path-like
        Destination file; its folder must exist.
    probabilities : array-like
        Real numbers, e.g. shaped (C, Y, X) or (C, Z, Y, X) as the network
        outputs them; stored as float32.
    axes : str, optional
        Letters from ``"TZCYX"``, each at most once, including ``Y`` and
        ``X``, in any order (e.g. ``"CZYX"``); the class axis is ``C``. Default:
        ``"YX"``, ``"CYX"`` or ``"CZYX"`` for 2, 3 or 4 dimensions.
    scale : tuple of float, optional
        Pixel size in `unit`, one value per spatial axis (Z, Y, X present in
        `axes`) or one per axis (non-spatial values ignored).
    unit : str
        Length unit of `scale`; ignored without `scale`.
    overwrite : bool
        Replace an existing file; if False an existing file raises
        :class:`~napari_unet.core.io.atomic.OutputError`.

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    The axes are reordered to ImageJ's T, Z, C, Y, X order, so reading the
    file back gives e.g. ``"ZCYX"`` for a ``"CZYX"`` input. The file is
    uncompressed (see :func:`write_labels`). When every value lies in
    [0, 1], the display range is set to 0-1.
    """
    path = Path(path)
    array = np.asarray(probabilities)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"probabilities must be real numbers, got an array of {array.dtype}")
    if array.size == 0:
        raise ValueError(f"the probabilities are empty (shape {array.shape}); nothing to write")
    if axes is None:
        defaults = {2: "YX", 3: "CYX", 4: "CZYX"}
        if array.ndim not in defaults:
            raise ValueError(f"probabilities with {array.ndim} dimensions need explicit axes, e.g. axes='TCZYX'")
        axes = defaults[array.ndim]
    axes = axes.upper()
    if len(axes) != array.ndim or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes) <= set(_IMAGEJ_ORDER):
        raise ValueError(
            f"axes={axes!r} do not fit probabilities shaped {array.shape}: give one letter per dimension "
            "from T, Z, C, Y, X, each once, including Y and X (e.g. 'CYX' or 'CZYX')"
        )
    sizes = _spatial_scale(scale, axes)
    unit = _check_unit(unit) if sizes is not None else unit
    order = sorted(range(len(axes)), key=lambda i: _IMAGEJ_ORDER.index(axes[i]))
    data = np.transpose(array, order).astype(np.float32, copy=False)
    ij_axes = "".join(axes[i] for i in order)
    display = None
    finite = data[np.isfinite(data)]
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        display = (0.0, 1.0)
    with _tiff_output(path, overwrite=overwrite, size=data.nbytes) as fh:
        _write_imagej(fh, data, ij_axes, sizes, unit, compression="none", display_range=display)
    return path


@contextlib.contextmanager
def _tiff_output(path: Path, *, overwrite: bool, size: int | None) -> Iterator[BinaryIO]:
    """:func:`atomic_output`, whose full-disk message says how much an uncompressed file of ``size`` bytes needs."""
    try:
        with atomic_output(path, overwrite=overwrite) as fh:
            yield fh
    except OutputError as exc:
        if size and is_disk_full(exc.__cause__ or exc):
            raise disk_full_error(path, needed=size) from exc.__cause__
        raise


def _label_array(labels: Any) -> tuple[np.ndarray, np.dtype]:
    """Validate ``labels``; return them as an array and the dtype to store."""
    array = np.asarray(labels)
    kind = array.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"labels must be integers (or booleans), got an array of {array.dtype}")
    if array.size == 0:
        raise ValueError(f"the labels are empty (shape {array.shape}); nothing to write")
    if kind == "b":
        return array, np.dtype(np.uint8)
    if kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("the labels contain NaN or infinite values; labels must be whole numbers >= 0")
        if not np.array_equal(array, np.trunc(array)):
            raise ValueError(
                f"the labels are {array.dtype} with fractional values; labels must be whole numbers. "
                "Round or threshold them first (e.g. probabilities > 0.5 for a mask)"
            )
    low, high = array.min(), array.max()
    if low < 0:
        raise ValueError(f"the labels contain negative values (minimum {low}); labels must be >= 0 (0 is background)")
    if kind == "f" and high >= 2.0**64:
        raise ValueError(f"the largest label {high} does not fit in 64 bits")
    high = int(high)
    for candidate in (np.uint8, np.uint16, np.uint32, np.uint64):
        if high <= np.iinfo(candidate).max:
            return array, np.dtype(candidate)
    raise AssertionError("unreachable: every integer array fits in uint64")  # pragma: no cover


def _check_label_axes(axes: str | None, ndim: int) -> str:
    if ndim not in _LABEL_AXES:
        raise ValueError(f"labels must be 2-D (YX), 3-D (ZYX or TYX) or 4-D (TZYX), got {ndim} dimension(s)")
    if axes is None:
        return _LABEL_AXES[ndim][0]
    if axes.upper() not in _LABEL_AXES[ndim]:
        allowed = " or ".join(repr(a) for a in _LABEL_AXES[ndim])
        raise ValueError(f"axes={axes!r} do not fit {ndim}-D labels; use {allowed}")
    return axes.upper()


def _spatial_scale(scale: tuple[float, ...] | None, axes: str) -> dict[str, float] | None:
    """Return ``{"Z": z, "Y": y, "X": x}`` (present axes only) or None."""
    if scale is None:
        return None
    spatial = [a for a in axes if a in "ZYX"]
    try:
        values = list(scale)
    except TypeError:  # a single number given for every axis
        values = [scale]  # type: ignore[list-item]
    if len(values) == len(axes):
        values = [v for a, v in zip(axes, values) if a in "ZYX"]
    elif len(values) != len(spatial):
        raise ValueError(
            f"scale={scale!r} needs one pixel size per spatial axis ({''.join(spatial)}) or one value per axis ({axes})"
        )
    sizes = {a: _positive(v) for a, v in zip(spatial, values)}
    if any(v is None for v in sizes.values()):
        raise ValueError(f"pixel sizes must be finite numbers > 0, got scale={scale!r}")
    return sizes  # type: ignore[return-value]


def _check_unit(unit: str) -> str:
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError(f"unit must be a non-empty string such as 'um' or 'nm', got {unit!r}")
    unit = _normalise_unit(unit)
    if not unit.isascii() or not unit.isprintable() or "=" in unit:
        raise ValueError(f"unit {unit!r} cannot be stored in an ImageJ file; use plain letters such as 'um' or 'nm'")
    return unit


def _check_compression(compression: str) -> str:
    if compression not in ("zlib", "none"):
        raise ValueError(f"compression must be 'zlib' or 'none', got {compression!r}")
    return compression


def _named(fh: BinaryIO) -> Any:
    """Wrap ``fh`` so that tifffile does not need ``fh.name`` to be a path.

    The file object from :func:`atomic_output` comes from :func:`os.fdopen`,
    whose ``name`` is an int, which tifffile cannot split into a folder and name.
    """
    name = fh.name if isinstance(getattr(fh, "name", None), str) else "labels.tif"
    return tifffile.FileHandle(fh, name=os.path.basename(name))


def _write_imagej(
    fh: BinaryIO,
    data: np.ndarray,
    axes: str,
    sizes: dict[str, float] | None,
    unit: str,
    *,
    compression: str,
    display_range: tuple[float, float] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> None:
    metadata: dict[str, Any] = {"axes": axes + "S", **(extra_metadata or {})}
    resolution = None
    if sizes is not None:
        metadata["unit"] = unit
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
        resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    if display_range is not None:
        metadata["min"], metadata["max"] = display_range
    # The trailing length-1 sample axis keeps tifffile from dropping a length-1 X axis.
    tifffile.imwrite(
        _named(fh),
        data[..., np.newaxis],
        imagej=True,
        photometric="minisblack",
        resolution=resolution,
        metadata=metadata,
        compression=None if compression == "none" else compression,
    )


def _write_plain(
    fh: BinaryIO,
    data: np.ndarray,
    axes: str,
    sizes: dict[str, float] | None,
    unit: str,
    *,
    compression: str,
) -> None:
    description: dict[str, Any] = {"shape": list(data.shape), "axes": axes}
    resolution = None
    resolutionunit = None
    if sizes is not None:
        description["unit"] = unit
        description["pixel_size"] = sizes
        cm = _CM_PER_UNIT.get(unit)
        if cm is not None:
            resolution = (1.0 / (sizes["X"] * cm), 1.0 / (sizes["Y"] * cm))
            resolutionunit = tifffile.RESUNIT.CENTIMETER
        else:
            resolution = (1.0 / sizes["X"], 1.0 / sizes["Y"])
            resolutionunit = tifffile.RESUNIT.NONE
    # A hand-made tifffile "shaped" description: with ``metadata`` tifffile
    # would drop a length-1 X axis from the stored pages.
    tifffile.imwrite(
        _named(fh),
        data,
        photometric="minisblack",
        resolution=resolution,
        resolutionunit=resolutionunit,
        metadata=None,
        description=json.dumps(description),
        compression=None if compression == "none" else compression,
    )
