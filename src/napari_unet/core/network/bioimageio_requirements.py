"""The optional bioimage.io libraries, imported only when a package is written or read."""

from __future__ import annotations

import gc
import importlib
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from napari_unet.core.errors import UserError

__all__ = ["BioimageioMissing", "INSTALL_HINT", "bioimageio_spec", "quiet_bioimageio"]

#: What to install for bioimage.io packages.
INSTALL_HINT = 'pip install "napari-unet-toolkit[bioimageio]" (bioimageio.spec and bioimageio.core)'


class BioimageioMissing(UserError, ImportError):
    """The bioimage.io libraries are not installed; the message says what to install."""


def bioimageio_spec() -> ModuleType:
    """``bioimageio.spec``, imported on first use.

    Raises
    ------
    BioimageioMissing
        If ``bioimageio.spec`` or ``bioimageio.core`` is not installed.
    """
    try:
        importlib.import_module("bioimageio.core")
        spec = importlib.import_module("bioimageio.spec")
    except ImportError as exc:
        raise BioimageioMissing(
            f"bioimage.io model packages need the bioimage.io libraries ({exc.name or exc} is missing): {INSTALL_HINT}"
        ) from exc
    _check_pydantic()
    return spec


def _release(name: str) -> tuple[int, ...]:
    """The first three numbers of an installed distribution's version."""
    from importlib.metadata import version

    numbers = re.findall(r"\d+", version(name))[:3]
    return tuple(int(n) for n in numbers)


def _check_pydantic() -> None:
    """Refuse bioimageio.spec before 0.5.14 with pydantic 2.14 or later: it cannot describe any file with them.

    (Its file serialiser passes pydantic's ``SerializationInfo`` where pydantic-core 2.50 wants an index;
    bioimageio.spec 0.5.14 fixed it, but bioimageio.core 0.11.0 requires bioimageio.spec 0.5.12.)
    """
    spec, pydantic = _release("bioimageio.spec"), _release("pydantic")
    if spec < (0, 5, 14) and pydantic >= (2, 14):
        raise BioimageioMissing(
            f"bioimageio.spec {'.'.join(map(str, spec))} does not work with pydantic {'.'.join(map(str, pydantic))}: "
            'install pydantic 2.13 (pip install "pydantic<2.14") or a bioimageio.core that allows '
            "bioimageio.spec 0.5.14 or later"
        )


@contextmanager
def quiet_bioimageio() -> Iterator[None]:
    """Run bioimage.io code without its warnings, and close the files it leaves open.

    bioimageio.spec 0.5.12 warns about deprecated pydantic and torch features
    and leaves the files it hashes open; they are closed here (a garbage
    collection) while their ``ResourceWarning`` is ignored.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            gc.collect()
