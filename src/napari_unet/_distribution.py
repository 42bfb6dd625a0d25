"""The distribution this package is installed as, and the other project that shares its import name.

This project is distributed as ``napari-unet-toolkit`` and imported as ``napari_unet``.
Another, unrelated project is published on PyPI as ``napari-unet`` and also installs an
import package called ``napari_unet``; this project itself was called ``napari-unet``
before version 0.1.0 was renamed. When a ``napari-unet`` distribution is installed next
to this one, the two write the same files (``napari_unet/__init__.py``,
``napari_unet/napari.yaml``) and napari then lists one of them, the other or none.
:func:`install_conflict` says so in words, with what to run.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

__all__ = ["DISTRIBUTION", "FOREIGN_DISTRIBUTION", "install_conflict"]

#: This project's distribution name on PyPI, also its npe2 plugin name (napari.yaml ``name:``).
DISTRIBUTION = "napari-unet-toolkit"

#: The other project's distribution name (and this project's former one).
FOREIGN_DISTRIBUTION = "napari-unet"

#: How this project's own summary begins (to tell an old install of it from the other project).
_OUR_SUMMARY = "U-Net segmentation for napari"


def install_conflict(
    distribution: Callable[[str], importlib.metadata.Distribution] = importlib.metadata.distribution,
) -> str | None:
    """What to do when a ``napari-unet`` distribution shares this environment, or None.

    Parameters
    ----------
    distribution : callable, optional
        Looks a distribution up by name (default :func:`importlib.metadata.distribution`;
        tests pass their own).

    Returns
    -------
    str or None
        A message naming the installed ``napari-unet`` (the other project, or an old
        install of this one under its former name) and the commands that fix the
        environment; None when no ``napari-unet`` distribution is installed.

    Examples
    --------
    >>> def nothing(name):
    ...     raise importlib.metadata.PackageNotFoundError(name)
    >>> install_conflict(nothing) is None
    True
    """
    try:
        other = distribution(FOREIGN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    summary = other.metadata.get("Summary") or ""
    if summary.startswith(_OUR_SUMMARY):
        what = "an old install of this project under its former name"
    else:
        what = f"another project ({summary.strip() or 'no summary'})"
    return (
        f"the distribution '{FOREIGN_DISTRIBUTION}' {other.version} is installed in this environment: {what}. "
        f"It installs the same import package napari_unet as {DISTRIBUTION}, so the two overwrite each other's "
        "files and napari may list the wrong plugin or none. Fix: "
        f"pip uninstall -y {FOREIGN_DISTRIBUTION} {DISTRIBUTION}, then reinstall this project "
        f'(pip install -e . in a checkout, or pip install "{DISTRIBUTION}[all]")'
    )
