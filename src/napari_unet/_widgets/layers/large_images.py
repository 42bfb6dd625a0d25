"""Segment widget support for image layers too large to load: block by block into OME-Zarr.

An image layer counts as large when it is multiscale, lazy (dask, zarr)
with more than :data:`LARGE_PIXELS` values, or too large to segment whole in
the memory available (a huge in-memory layer). The Segment widget runs
:func:`napari_unet.core.blockwise.to_zarr.segment_to_zarr_job` in a worker thread
(the layer's data is read block by block, never loaded whole) and the result
comes back as a lazy multiscale layer backed by the zarr folder on disk.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet._widgets.layers.results import RESULT_KEY, Target, labels_name, probabilities_name
from napari_unet.core.blockwise.to_zarr import BlockwiseResult
from napari_unet.core.inference.budget import fits_in_memory
from napari_unet.core.inference.layout import ImageLayout
from napari_unet.core.io.ome_zarr import open_result
from napari_unet.core.network.unet import UNetConfig

log = logging.getLogger(__name__)

#: Lazy image layers with more values than this are segmented block by block (4096 x 4096).
LARGE_PIXELS = 4096 * 4096


def is_large(
    layer: Any,
    /,
    *,
    layout: ImageLayout | None = None,
    config: UNetConfig | None = None,
    output_kind: str = "instances",
    keep_probabilities: bool = False,
) -> bool:
    """Whether ``layer`` should be segmented block by block.

    It should when it is multiscale, lazy and big, or (given its ``layout``
    and the model's ``config``) when segmenting it whole would need more
    memory than is available, in-memory layers included
    (:func:`~napari_unet.core.inference.budget.fits_in_memory`).
    """
    if layer.multiscale:
        return True
    data = layer.data
    if not isinstance(data, np.ndarray) and int(np.prod(data.shape)) > LARGE_PIXELS:
        return True
    if layout is None or config is None:
        return False
    return not fits_in_memory(layout, config, output_kind=output_kind, keep_probabilities=keep_probabilities)


def result_path(layer: Any, output: str) -> Path:
    """A new ``.zarr`` path for the result of ``layer``.

    Next to the file the layer was opened from when that folder is writable,
    else in the temporary folder; never an existing path.
    """
    source = getattr(getattr(layer, "source", None), "path", None)
    folder = Path(source).parent if source else None
    if folder is None or not folder.is_dir() or not _writable(folder):
        folder = Path(tempfile.gettempdir()) / "napari-unet"
        folder.mkdir(exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in layer.name).strip("._") or "image"
    suffix = {"instances": "labels", "classes": "classes"}.get(output, "probabilities")
    path = folder / f"{stem}_{suffix}.zarr"
    number = 2
    while path.exists():
        path = folder / f"{stem}_{suffix}-{number}.zarr"
        number += 1
    return path


def show_lazy_result(
    viewer: Any, results: Any, target: Target, result: BlockwiseResult, class_names: list[str]
) -> list[Any]:
    """Add (or replace) the result layers of ``target.source`` with lazy layers backed by ``result.path``.

    Returns the layers. Only the part of the zarr shown on screen is read.
    """
    levels = open_result(result.path)
    data: Any = levels if len(levels) > 1 else levels[0]
    kind = "probabilities" if result.output == "probabilities" else "labels"
    for old in results.find(viewer, target.source, kind):
        viewer.layers.remove(old)
    metadata = {
        "output": result.output,
        "source": target.source.name,
        "class_names": list(class_names),
        "path": str(result.path),
    }
    if result.output == "probabilities":
        channel = len(target.layout.stack_axes)
        names = [probabilities_name(target.source.name, c) for c in class_names]
        layers = viewer.add_image(
            data,
            channel_axis=channel,
            name=names,
            **target.geometry,
            contrast_limits=[0.0, 1.0],
            blending="additive",
            multiscale=len(levels) > 1,
            visible=[False] + [True] * (len(names) - 1),
        )
        for index, layer in enumerate(layers):
            unwrap_proxy(layer).metadata[RESULT_KEY] = {**metadata, "class_index": index}
    else:
        layer = viewer.add_labels(
            data, name=labels_name(target.source.name), **target.geometry, multiscale=len(levels) > 1
        )
        unwrap_proxy(layer).metadata[RESULT_KEY] = metadata
        layers = [layer]
    results.bind(target.source, kind, layers)
    return layers


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
