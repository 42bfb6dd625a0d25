"""Headless U-Net core of napari-unet: no napari, Qt or magicgui in here.

Everything a script, the command line or the napari widgets need:

- :class:`UNetConfig`, :class:`UNet`: the network of Ronneberger et al. (2015).
- :class:`SegmentationModel`, :func:`load_model`, :func:`save_model`: self-describing model files.
- :func:`segment`, :func:`segment_job`: overlap-tile segmentation of images and stacks.
- :class:`InferenceOptions`: device, tiles, precision and engine, the same for every path.
- :func:`segment_to_zarr`, :func:`segment_files_to_zarr`, :class:`LazyImage`: images larger than
  memory, block by block into OME-Zarr (optionally on a dask.distributed cluster).
- :class:`Progress`, :func:`run_job`: long jobs are generators of progress reports.
"""

from __future__ import annotations

from napari_unet.core.batch.zarr_files import segment_files_to_zarr, segment_files_to_zarr_job
from napari_unet.core.blockwise.to_zarr import BlockwiseResult, segment_to_zarr, segment_to_zarr_job
from napari_unet.core.errors import UserError
from napari_unet.core.inference.options import InferenceOptions
from napari_unet.core.inference.segmentation import SegmentationResult, segment, segment_job
from napari_unet.core.inference.tiling import tile_grid
from napari_unet.core.io.ome_zarr import LazyImage, open_result
from napari_unet.core.network.factory import new_model
from napari_unet.core.network.geometry import halo, output_size, valid_input_size
from napari_unet.core.network.instances import InstanceRule, class_map, instances_from_probabilities
from napari_unet.core.network.model_file import (
    ModelDescription,
    ModelFileError,
    SegmentationModel,
    load_model,
    read_description,
    save_model,
)
from napari_unet.core.network.normalization import Normalization
from napari_unet.core.network.registry import ShippedModel, load_named_model, resolve_model_path, shipped_models
from napari_unet.core.network.unet import UNet, UNetConfig
from napari_unet.core.progress import Progress, Stage, run_job, within

__all__ = [
    "UserError",
    "BlockwiseResult",
    "InferenceOptions",
    "LazyImage",
    "open_result",
    "segment_files_to_zarr",
    "segment_files_to_zarr_job",
    "segment_to_zarr",
    "segment_to_zarr_job",
    "InstanceRule",
    "ModelDescription",
    "ModelFileError",
    "Normalization",
    "Progress",
    "Stage",
    "within",
    "SegmentationModel",
    "SegmentationResult",
    "UNet",
    "UNetConfig",
    "class_map",
    "halo",
    "instances_from_probabilities",
    "load_model",
    "new_model",
    "output_size",
    "read_description",
    "run_job",
    "save_model",
    "segment",
    "segment_job",
    "shipped_models",
    "ShippedModel",
    "load_named_model",
    "resolve_model_path",
    "tile_grid",
    "valid_input_size",
]
