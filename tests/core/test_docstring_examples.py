"""The Examples sections of the core's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import napari_unet.core as core

MODULES = sorted(m.name for m in pkgutil.walk_packages(core.__path__, "napari_unet.core."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_of(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_the_core_has_examples_to_run():
    attempted = 0
    for name in MODULES:
        flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
        attempted += doctest.testmod(importlib.import_module(name), optionflags=flags, report=False).attempted
    assert attempted >= 80
