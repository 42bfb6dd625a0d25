"""The user-facing errors that the widgets raise themselves."""

from __future__ import annotations

from napari_unet.core.errors import UserError

__all__ = ["AnnotationError"]


class AnnotationError(UserError, ValueError):
    """The painted labels cannot be trained on: wrong shape, nothing painted, classes out of range.

    The message names the layer or image and says what to paint.

    Examples
    --------
    >>> issubclass(AnnotationError, UserError) and issubclass(AnnotationError, ValueError)
    True
    """
