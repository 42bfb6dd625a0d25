"""Export a model as a bioimage.io model package (spec 0.5) for deepImageJ/Fiji, QuPath, ilastik and bioimageio.core.

The package holds the PyTorch state dict with a self-contained architecture
file, the same network traced to TorchScript, a test input and the output the
model gives for it, a cover image, a README with the normalisation and the
instance rule, and napari-unet's own description (``config.napari_unet``) so
:func:`~napari_unet.core.network.bioimageio_import.import_bioimageio` reads
it back to the same model. The package is written and checked with
``bioimageio.spec`` (an optional dependency).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from napari_unet.core.errors import UserError
from napari_unet.core.io.atomic import atomic_write_bytes, exists_message
from napari_unet.core.network import bioimageio_architecture as arch
from napari_unet.core.network.bioimageio_requirements import bioimageio_spec, quiet_bioimageio
from napari_unet.core.network.bioimageio_texts import documentation
from napari_unet.core.network.geometry import halo, largest_valid_input, same_margin, valid_input_size
from napari_unet.core.network.instances import labels_from_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.normalization import Normalization, apply_normalization
from napari_unet.core.progress import Progress, Stage, run_job

__all__ = ["ExportError", "export_bioimageio", "export_bioimageio_job", "package_geometry", "sample_plane"]

#: Side of the test input, at most (pixels): large enough for a meaningful cover, small enough for a small package.
TEST_SIDE = 256
#: The paper every package cites.
_UNET_DOI = "10.1007/978-3-319-24574-4_28"
_UNET_CITATION = (
    "Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for Biomedical Image Segmentation"
)
_STEPS = 4


class ExportError(UserError, ValueError):
    """A model cannot be exported as a bioimage.io package; the message says why."""


def package_geometry(model: SegmentationModel, /) -> tuple[int, int, int]:
    """``(min, step, halo)`` of the package's spatial axes.

    Valid inputs are ``min + n * step`` pixels. A ``valid`` network's output is
    ``2 * halo`` smaller than its input; a ``same`` network's output is as large
    as its input, and ``halo`` pixels at each edge of a tile are to be
    discarded (napari-unet's own tile margin).
    """
    config = model.config
    step = config.downsampling
    if config.padding == "valid":
        return valid_input_size(config, 1), step, halo(config)
    margin = same_margin(config)
    return 2 * margin + step, step, margin  # the margin is a multiple of the step


def sample_plane(data: np.ndarray, info: Any, /) -> np.ndarray:
    """The first plane (Y, X, C) of an image read by :func:`~napari_unet.core.io.tiff.read_image`.

    Time points and Z slices after the first are left out; channels (``C``
    or RGB samples ``S``) go last.
    """
    axes = str(info.axes)
    for letter in "TZ":
        if letter in axes:
            data = np.take(data, 0, axis=axes.index(letter))
            axes = axes.replace(letter, "")
    if "C" in axes:
        data = np.moveaxis(data, axes.index("C"), -1)
    return data


def export_bioimageio(
    model: SegmentationModel,
    path: str | os.PathLike,
    /,
    *,
    sample: np.ndarray | None = None,
    authors: Sequence[str] = ("napari-unet",),
    license: str = "BSD-3-Clause",
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip`` file); see :func:`export_bioimageio_job`."""
    return run_job(
        export_bioimageio_job(model, path, sample=sample, authors=authors, license=license, overwrite=overwrite)
    )


def export_bioimageio_job(
    model: SegmentationModel,
    path: str | os.PathLike,
    /,
    *,
    sample: np.ndarray | None = None,
    authors: Sequence[str] = ("napari-unet",),
    license: str = "BSD-3-Clause",
    overwrite: bool = False,
) -> Generator[Progress, None, Path]:
    """Write ``model`` as a bioimage.io model package, as a job.

    Parameters
    ----------
    model : SegmentationModel
        Any model: shipped, loaded or fine-tuned.
    path : path-like
        The ``.zip`` file to write (atomically).
    sample : numpy.ndarray, optional
        A plane (Y, X) or (Y, X, C) like the images the model is for; its
        centre (at most :data:`TEST_SIDE` pixels square) becomes the test
        input and the cover. Defaults to napari-unet's bundled nuclei sample
        for one-channel models.
    authors : sequence of str
        Names of the people who made the model (at least one).
    license : str
        SPDX licence identifier of the model, e.g. ``"CC-BY-4.0"``.
    overwrite : bool
        Replace an existing file at ``path``.

    Yields
    ------
    Progress
        ``Stage.EXPORT``, one report per step.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    BioimageioMissing
        bioimageio.spec or bioimageio.core is not installed.
    ExportError
        No sample for a multi-channel model, a sample too small or with the
        wrong channels, no author, or a description bioimage.io refuses.
    OutputError
        ``path`` exists (and ``overwrite`` is False), or cannot be written.
    """
    spec = bioimageio_spec()
    path = Path(path)
    if not overwrite and path.exists():
        raise ExportError(exists_message(path))
    if not [a for a in authors if a.strip()]:
        raise ExportError("a bioimage.io package needs at least one author; give a name")
    yield Progress(Stage.EXPORT, 0, _STEPS, message="Preparing the test image")
    plane = _test_plane(model, sample)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as tmp:
        folder = Path(tmp)
        yield Progress(Stage.EXPORT, 1, _STEPS, message="Writing the weights and TorchScript")
        files = _write_files(model, plane, folder)
        yield Progress(Stage.EXPORT, 2, _STEPS, message="Describing the package")
        with quiet_bioimageio():
            descr = _describe(model, files, authors=authors, license=license)
        yield Progress(Stage.EXPORT, 3, _STEPS, message="Writing and checking the package")
        packed = folder / "package.zip"
        with quiet_bioimageio():
            spec.save_bioimageio_package(descr, output_path=packed)
            del descr
        atomic_write_bytes(path, packed.read_bytes(), overwrite=overwrite)
    yield Progress(Stage.EXPORT, _STEPS, _STEPS, message=f"Wrote {path.name}")
    return path


# ---------------------------------------------------------------------- the files


def _test_plane(model: SegmentationModel, sample: np.ndarray | None) -> np.ndarray:
    """The test input (Y, X, C), cropped to a valid size of at most :data:`TEST_SIDE` pixels square."""
    channels = model.config.in_channels
    if sample is None:
        if channels != 1:
            raise ExportError(
                f"the model takes {channels} channels; give a sample image with {channels} channels for the "
                "package's test input (--sample IMAGE.tif on the command line)"
            )
        sample = _bundled_sample()
    data = np.asarray(sample)
    data = data[..., None] if data.ndim == 2 else data
    if data.ndim != 3 or data.shape[-1] != channels:
        raise ExportError(
            f"the sample image has shape {sample.shape}, but the model needs a plane (Y, X) or (Y, X, {channels})"
        )
    min_size, step, _ = package_geometry(model)
    side = _test_side(model, min(data.shape[:2]))
    if side is None:
        raise ExportError(
            f"the sample image ({data.shape[0]} x {data.shape[1]} pixels) is smaller than the model's smallest "
            f"input ({min_size} x {min_size}); give a larger sample image"
        )
    top, left = (data.shape[0] - side) // 2, (data.shape[1] - side) // 2
    return np.ascontiguousarray(data[top : top + side, left : left + side], dtype=np.float32)


def _test_side(model: SegmentationModel, available: int) -> int | None:
    """The largest declared size (``min + n * step``) up to ``available`` and about :data:`TEST_SIDE`."""
    min_size, step, _ = package_geometry(model)
    limit = min(available, max(TEST_SIDE, min_size))
    if model.config.padding == "valid":
        limit = min(available, largest_valid_input(model.config, TEST_SIDE + 2 * halo(model.config)))
    if limit < min_size:
        return None
    return min_size + (limit - min_size) // step * step


def _bundled_sample() -> np.ndarray:
    from importlib import resources

    from napari_unet.core.io.tiff import read_image

    data, _ = read_image(Path(str(resources.files("napari_unet") / "sample_data" / "nuclei.tif")))
    return data


def _probabilities(network: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return network(x).numpy()


def _write_files(model: SegmentationModel, plane: np.ndarray, folder: Path) -> dict[str, Path]:
    """Weights, architecture, TorchScript, test tensors, cover and README in ``folder``."""
    desc = model.description
    stats = desc.normalization.statistics(plane)
    raw = np.moveaxis(plane, -1, 0)[None]  # (1, C, Y, X)
    x = torch.from_numpy(np.moveaxis(apply_normalization(plane, stats), -1, 0)[None].copy())
    network = arch.NapariUNet(**model.config.to_dict())
    state = {k: v.detach().cpu().clone() for k, v in model.network.state_dict().items()}
    network.load_state_dict(state)
    network.eval()
    files = {
        "weights": folder / "weights.pt",
        "architecture": folder / arch.FILE_NAME,
        "torchscript": folder / "weights_torchscript.pt",
        "test_input": folder / "test_input.npy",
        "test_output": folder / "test_output.npy",
        "sample_input": folder / "sample_input.tif",
        "sample_output": folder / "sample_output.tif",
        "cover": folder / "cover.png",
        "documentation": folder / "README.md",
    }
    torch.save(state, files["weights"])
    files["architecture"].write_text(arch.architecture_source(), encoding="utf-8")
    with (
        warnings.catch_warnings()
    ):  # torch.jit is deprecated in favour of torch.export, which the consumers do not read
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, x)
    traced.save(str(files["torchscript"]))
    probabilities = _probabilities(network, x)
    np.save(files["test_input"], raw.astype(np.float32))
    np.save(files["test_output"], probabilities.astype(np.float32))
    tifffile.imwrite(files["sample_input"], raw[0].astype(np.float32), photometric="minisblack")
    tifffile.imwrite(files["sample_output"], probabilities[0].astype(np.float32), photometric="minisblack")
    _write_cover(x[0, 0].numpy(), probabilities[0], model, files["cover"])
    min_size, step, margin = package_geometry(model)
    files["documentation"].write_text(documentation(desc, halo=margin, min_size=min_size, step=step), encoding="utf-8")
    return files


def _write_cover(image: np.ndarray, probabilities: np.ndarray, model: SegmentationModel, path: Path) -> None:
    """Input (gray) beside its objects (or classes), 2:1 as bioimage.io recommends."""
    from PIL import Image

    rule = model.description.instance_rule
    labels = labels_from_probabilities(
        probabilities, kind="classes" if rule.method == "none" else "instances", rule=rule
    ).astype(np.int64)
    gray = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if model.config.padding == "valid":  # the output covers the centre of the input
        cut = (gray.shape[0] - labels.shape[0]) // 2
        gray = gray[cut : cut + labels.shape[0], cut : cut + labels.shape[1]]
    hues = (np.arange(labels.max() + 1) * 0.618034) % 1.0
    palette = np.stack([_hue_to_rgb(h) for h in hues]) if hues.size else np.zeros((1, 3))
    palette[0] = 0
    colour = (palette[labels] * 255).astype(np.uint8)
    picture = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), colour], axis=1)
    Image.fromarray(picture).save(path)


def _hue_to_rgb(hue: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(hue, 0.75, 1.0))


# ---------------------------------------------------------------------- the description


def _describe(model: SegmentationModel, files: dict[str, Path], *, authors: Sequence[str], license: str) -> Any:
    """The ``bioimageio.spec`` v0.5 model description of the package's files."""
    from bioimageio.spec.model import v0_5 as bm
    from bioimageio.spec.model.v0_5 import AxisId, TensorId

    desc = model.description
    torch_version = bm.Version(torch.__version__.split("+")[0])
    architecture = bm.ArchitectureFromFileDescr(
        source=files["architecture"], callable=bm.Identifier(arch.CALLABLE_NAME), kwargs=model.config.to_dict()
    )
    weights = bm.WeightsDescr(
        pytorch_state_dict=bm.PytorchStateDictWeightsDescr(
            source=files["weights"], architecture=architecture, pytorch_version=torch_version
        ),
        torchscript=bm.TorchscriptWeightsDescr(
            source=files["torchscript"],
            pytorch_version=torch_version,
            parent="pytorch_state_dict",
            comment="torch.jit.trace of the same network",
        ),
    )
    try:
        return bm.ModelDescr(
            name=_package_name(desc.name),
            description=_summary(desc.description, desc.name),
            authors=[bm.Author(name=a.strip()) for a in authors if a.strip()],
            cite=[bm.CiteEntry(text=_UNET_CITATION, doi=bm.Doi(_UNET_DOI))],
            license=bm.LicenseId(license),
            documentation=bm.FileDescr(source=files["documentation"]),
            covers=[bm.FileDescr(source=files["cover"])],
            tags=["unet", "segmentation", "instance-segmentation", "2d", "pytorch", "napari-unet"],
            inputs=[_input_tensor(model, files, bm, TensorId("input"), AxisId)],
            outputs=[_output_tensor(model, files, bm, TensorId("input"), AxisId)],
            weights=weights,
            config=bm.Config.model_validate({"napari_unet": desc.to_dict()}),
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ExportError(f"bioimage.io refuses the package's description: {_first_error(exc)}") from exc


def _space_axes(model: SegmentationModel, bm: Any, sizes: Sequence[Any], *, output: bool) -> list[Any]:
    unit = {"unit": "micrometer", "scale": model.description.pixel_size_um} if model.description.pixel_size_um else {}
    _, _, margin = package_geometry(model)
    if output and model.config.padding == "same":
        return [bm.SpaceOutputAxisWithHalo(id=bm.AxisId(a), size=s, halo=margin, **unit) for a, s in zip("yx", sizes)]
    kind = bm.SpaceOutputAxis if output else bm.SpaceInputAxis
    return [kind(id=bm.AxisId(a), size=s, **unit) for a, s in zip("yx", sizes)]


def _input_tensor(model: SegmentationModel, files: dict[str, Path], bm: Any, tensor_id: Any, axis_id: Any) -> Any:
    min_size, step, _ = package_geometry(model)
    size = bm.ParameterizedSize(min=min_size, step=step)
    return bm.InputTensorDescr(
        id=tensor_id,
        description="the image, any intensity range (normalised by the pre-processing)",
        axes=[
            bm.BatchAxis(),
            bm.ChannelAxis(channel_names=list(model.description.channel_names)),
            *_space_axes(model, bm, [size, size], output=False),
        ],
        test_tensor=bm.FileDescr(source=files["test_input"]),
        sample_tensor=bm.FileDescr(source=files["sample_input"]),
        data=bm.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_preprocessing(model.description.normalization, bm, axis_id),
    )


def _output_tensor(model: SegmentationModel, files: dict[str, Path], bm: Any, input_id: Any, axis_id: Any) -> Any:
    offset = -2 * halo(model.config)
    sizes = [bm.SizeReference(tensor_id=input_id, axis_id=axis_id(a), offset=offset) for a in "yx"]
    return bm.OutputTensorDescr(
        id=bm.TensorId("probabilities"),
        description="class probabilities (softmax over the classes)",
        axes=[
            bm.BatchAxis(),
            bm.ChannelAxis(channel_names=list(model.description.class_names)),
            *_space_axes(model, bm, sizes, output=True),
        ],
        test_tensor=bm.FileDescr(source=files["test_output"]),
        sample_tensor=bm.FileDescr(source=files["sample_output"]),
        data=bm.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )


def _preprocessing(norm: Normalization, bm: Any, axis_id: Any) -> list[Any]:
    """napari-unet's normalisation as bioimage.io pre-processing (see :func:`~.bioimageio_texts.normalization_text`)."""
    per_plane = [axis_id("y"), axis_id("x")]
    if norm.kind == "percentile":
        if norm.high <= 1:
            raise ExportError(
                f"bioimage.io cannot express an upper percentile of {norm.high:g} (it must be above 1); "
                "fine-tune the model with another normalisation"
            )
        kwargs = bm.ScaleRangeKwargs(axes=per_plane, min_percentile=norm.low, max_percentile=norm.high)
        return [bm.ScaleRangeDescr(kwargs=kwargs)]
    if norm.kind == "range":
        gain = 1.0 / (norm.high - norm.low)
        return [bm.ScaleLinearDescr(kwargs=bm.ScaleLinearKwargs(gain=gain, offset=-norm.low * gain))]
    return [bm.ZeroMeanUnitVarianceDescr(kwargs=bm.ZeroMeanUnitVarianceKwargs(axes=per_plane))]


def _package_name(name: str) -> str:
    """The model's name in the characters bioimage.io allows (letters, digits, ``_+- ()``), 5 to 64 long."""
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]+", " ", name).strip()
    cleaned = re.sub(r" {2,}", " ", cleaned)[:64].strip()
    return cleaned if len(cleaned) >= 5 else f"napari-unet {cleaned}".strip()


def _summary(description: str, name: str) -> str:
    text = description.strip() or f"{name}: a U-Net segmentation model made with napari-unet."
    return text if len(text) <= 1000 else text[:997] + "..."


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"
    return str(exc).splitlines()[0]
