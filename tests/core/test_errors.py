"""Every error a user can act on shares one base class, and keeps its built-in one."""

from __future__ import annotations

import pytest

from napari_unet.core import ModelFileError, UserError
from napari_unet.core.batch.files import InputError
from napari_unet.core.inference.engine import EngineError
from napari_unet.core.inference.layout import ImageLayoutError
from napari_unet.core.inference.options import OptionsError
from napari_unet.core.inference.predict import OutOfMemoryError
from napari_unet.core.inference.segmentation import ImageTypeError
from napari_unet.core.io.atomic import OutputError
from napari_unet.core.io.calibration import LabelAxesError
from napari_unet.core.io.memory import ImageTooLargeError
from napari_unet.core.io.tiff import ImageReadError
from napari_unet.core.training.annotations import AnnotationError
from napari_unet.core.training.loop import TrainingSettingsError
from napari_unet.core.training.steps import TrainingDivergedError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ModelFileError, ValueError),
        (InputError, ValueError),
        (ImageLayoutError, ValueError),
        (ImageReadError, ValueError),
        (EngineError, RuntimeError),
        (OutOfMemoryError, RuntimeError),
        (OutputError, OSError),
        (ImageTooLargeError, MemoryError),
        (LabelAxesError, ValueError),
        (OptionsError, ValueError),
        (ImageTypeError, ValueError),
        (AnnotationError, ValueError),
        (TrainingSettingsError, ValueError),
        (TrainingDivergedError, FloatingPointError),
    ],
)
def test_user_errors_derive_from_the_base_and_their_builtin(error, builtin):
    assert issubclass(error, UserError) and issubclass(error, builtin)
    with pytest.raises(UserError, match="what to do"):
        raise error("what to do")


def test_a_programming_error_is_not_a_user_error():
    assert not issubclass(TypeError, UserError) and not issubclass(ValueError, UserError)


def test_what_users_get_wrong_when_segmenting_is_a_user_error(tiny_model):
    import numpy as np

    from napari_unet.core import segment, segment_to_zarr

    with pytest.raises(ImageTypeError, match="cannot be segmented"):
        segment(np.array([["a", "b"]]), tiny_model, device="cpu")
    with pytest.raises(OptionsError, match="output_kind must be one of"):
        segment(np.zeros((16, 16), np.float32), tiny_model, output_kind="objects", device="cpu")
    with pytest.raises(OptionsError, match="block size"):
        segment_to_zarr(np.zeros((16, 16), np.float32), tiny_model, "unused.zarr", block_size=3, device="cpu")
