"""A training set on disk: a folder of images and their labels, paired by file name.

The layout is the one ``napari-unet train IMAGES --labels LABELS`` reads
(labels found by the image's file name)::

    FOLDER/images/NAME.tif     the image (channels and RGB kept)
    FOLDER/labels/NAME.tif     its labels (ImageJ TIFF, smallest integer type)
    FOLDER/reviewed/NAME.tif   optional: 1 where the labels were reviewed

so a set saved from the Fine-tune widget trains on the command line with
``napari-unet train FOLDER/images --labels FOLDER/labels``, and a folder laid
out so (e.g. made by hand, or by an earlier session) is read back by
:func:`load_training_set`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.io.atomic import OutputError, atomic_output, exists_message, probe_writable
from napari_unet.core.io.export import file_stem
from napari_unet.core.io.tiff import read_image, write_labels
from napari_unet.core.training.annotations import AnnotationError
from napari_unet.core.training.finetune_job import AnnotatedImage

IMAGES, LABELS, REVIEWED = "images", "labels", "reviewed"
_SUFFIXES = (".tif", ".tiff")


def save_training_set(
    images: Sequence[AnnotatedImage], folder: str | os.PathLike, /, *, overwrite: bool = False
) -> list[Path]:
    """Write ``images`` and their labels into ``folder`` (see the module's layout).

    Parameters
    ----------
    images : sequence of AnnotatedImage
        The annotated images; each is written as ``<name>.tif``. Labels of an
        image trained on one plane only keep that plane (the others are 0,
        i.e. not annotated).
    folder : path-like
        Created if missing (with its ``images`` and ``labels`` folders).
    overwrite : bool
        Replace files of the same name; if False (default) nothing is
        written when any of them exists.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    OutputError
        The folder cannot be written (read-only, disk full), or a file exists
        and ``overwrite`` is False.

    Examples
    --------
    >>> item = AnnotatedImage("cells", np.ones((8, 8), np.uint8), np.eye(8, dtype=np.uint16))
    >>> [p.name for p in save_training_set([item], tmp)]  # doctest: +SKIP
    ['cells.tif', 'cells.tif']
    """
    root = Path(folder).expanduser()
    stems = [file_stem(item.name) for item in images]
    if len(set(stems)) != len(stems):
        raise OutputError("two images of the training set have the same file name; rename one of the layers")
    targets = [(root / IMAGES / f"{stem}.tif", root / LABELS / f"{stem}.tif") for stem in stems]
    if not overwrite:
        for path in (p for pair in targets for p in pair):
            if path.exists():
                raise OutputError(exists_message(path))
    for sub in (IMAGES, LABELS):
        probe_writable(root / sub, create=True)
    written: list[Path] = []
    for item, (image_path, labels_path) in zip(images, targets):
        _write_image(image_path, item)
        written.append(image_path)
        written.append(write_labels(labels_path, _labels_to_save(item), overwrite=True).path)
        if item.reviewed is not None:
            probe_writable(root / REVIEWED, create=True)
            reviewed = write_labels(root / REVIEWED / f"{file_stem(item.name)}.tif", item.reviewed, overwrite=True)
            written.append(reviewed.path)
    return written


def load_training_set(folder: str | os.PathLike, /) -> list[AnnotatedImage]:
    """Read the images and labels of a training-set folder, paired by file name.

    Raises
    ------
    AnnotationError
        The folder has no ``images`` and ``labels`` folders, no image, or an
        image without a label file of the same name (named in the message).
    ImageReadError
        A file cannot be read.
    """
    root = Path(folder).expanduser()
    image_dir, labels_dir = root / IMAGES, root / LABELS
    if not image_dir.is_dir() or not labels_dir.is_dir():
        raise AnnotationError(
            f"{root} is not a training-set folder: it needs an '{IMAGES}' and a '{LABELS}' folder "
            "with files of the same names (as 'Save training set...' writes them)"
        )
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _SUFFIXES and not p.name.startswith("."))
    if not files:
        raise AnnotationError(f"{image_dir} holds no .tif image")
    loaded = []
    for path in files:
        labels_path = _same_name(labels_dir, path.name)
        if labels_path is None:
            raise AnnotationError(f"no labels for {path.name}: {labels_dir} needs a label file of the same name")
        image, info = read_image(path)
        labels, _ = read_image(labels_path)
        reviewed_path = _same_name(root / REVIEWED, path.name)
        reviewed = None if reviewed_path is None else read_image(reviewed_path)[0].astype(bool)
        channel_axis = info.axes.index("C") if "C" in info.axes and not info.rgb else None
        loaded.append(
            AnnotatedImage(
                path.stem, image, np.asarray(labels), channel_axis=channel_axis, rgb=info.rgb, reviewed=reviewed
            )
        )
    return loaded


def _same_name(folder: Path, name: str) -> Path | None:
    path = folder / name
    return path if path.is_file() else None


def _labels_to_save(item: AnnotatedImage) -> np.ndarray:
    """The labels of ``item``; for one plane, the other planes are 0 (not annotated)."""
    labels = np.asarray(item.labels)
    if item.plane is None:
        return labels
    only = np.zeros_like(labels)
    only[item.plane] = labels[item.plane]
    return only


def _write_image(path: Path, item: AnnotatedImage) -> None:
    """Write the image of ``item`` (atomically) with axes that :func:`read_image` reads back."""
    data = np.asarray(item.image)
    with atomic_output(path, overwrite=True) as fh:
        if item.rgb:
            tifffile.imwrite(fh, data, photometric="rgb")
        else:
            tifffile.imwrite(fh, data, photometric="minisblack", metadata={"axes": _axes(data.ndim, item.channel_axis)})


def _axes(ndim: int, channel_axis: int | None) -> str:
    """Axis letters of an image of ``ndim`` dimensions: stacks as Z (and T before it), C where given."""
    spatial = ndim - (channel_axis is not None)
    letters = list("TZYX"[-spatial:]) if spatial <= 4 else ["Q"] * (spatial - 2) + ["Y", "X"]
    if channel_axis is not None:
        letters.insert(channel_axis, "C")
    return "".join(letters)
