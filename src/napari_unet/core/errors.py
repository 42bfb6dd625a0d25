"""The one base class of the errors a user can act on.

Every error that napari-unet raises because of what the user gave it (an image it
cannot read, a model file it refuses, labels that do not fit, a folder it cannot write,
too little memory) derives from :class:`UserError`, and its message says what to do.
The widgets and the command line catch :class:`UserError` and show the message;
anything else is a programming error and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the input, a file, the settings or the machine, explained in the message.

    Subclasses also derive from the built-in class that fits (``ValueError``,
    ``OSError``, ``RuntimeError``), so code that caught those keeps working.

    Examples
    --------
    >>> from napari_unet.core import ModelFileError, UserError
    >>> issubclass(ModelFileError, UserError)
    True
    """
