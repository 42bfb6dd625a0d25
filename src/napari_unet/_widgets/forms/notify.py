"""napari's notifications, showing a message literally even when it names a file or layer that looks like HTML.

napari draws a notification's text the way Qt draws a label's (rich text when it looks
like HTML), and our messages name models, layers and files. These wrappers pass a message
that Qt would take for HTML through :func:`~.plain_text.literal_tip`; others unchanged.
"""

from __future__ import annotations

import functools

from napari.utils import notifications

from napari_unet._distribution import install_conflict
from napari_unet._widgets.forms.plain_text import literal_tip

__all__ = ["show_error", "show_info", "show_warning", "warn_install_conflict"]


def show_error(message: str) -> None:
    """napari's ``show_error``, with ``message`` shown as it is."""
    notifications.show_error(literal_tip(message))


def show_info(message: str) -> None:
    """napari's ``show_info``, with ``message`` shown as it is."""
    notifications.show_info(literal_tip(message))


def show_warning(message: str) -> None:
    """napari's ``show_warning``, with ``message`` shown as it is."""
    notifications.show_warning(literal_tip(message))


@functools.cache
def warn_install_conflict() -> str | None:
    """Warn once per session when another ``napari-unet`` distribution shares this environment.

    Returns
    -------
    str or None
        The message shown (see :func:`napari_unet._distribution.install_conflict`), or None.
    """
    message = install_conflict()
    if message is not None:
        show_warning(f"napari-unet-toolkit: {message}")
    return message
