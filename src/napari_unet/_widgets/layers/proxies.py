"""Working with the proxies napari hands to plugins."""

from __future__ import annotations

from typing import Any


def unwrap_proxy(obj: Any) -> Any:
    """The napari object behind a plugin proxy (``PublicOnlyProxy``), or ``obj`` itself.

    napari hands plugins a proxy of the viewer and wraps every object reached
    through it in a new proxy, so identity (``is``), dictionary keys and weak
    references must use the wrapped object. Use the proxy for everything else.
    """
    while True:
        inner = getattr(obj, "__wrapped__", None)
        if inner is None or inner is obj:
            return obj
        obj = inner
