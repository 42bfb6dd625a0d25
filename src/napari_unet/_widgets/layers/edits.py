"""Which result layers hold the user's edits, so that Segment never overwrites them.

napari emits ``layer.events.paint`` for every brush stroke, fill and erase
(the steps of its undo history). A result layer is watched from the moment
Segment writes it: a paint event marks it edited. Edits made without the
layer's tools (``layer.data[...] = ...`` in the console) are caught by a
checksum of the data taken when Segment wrote it, for layers small enough to
checksum quickly on the GUI thread.

Only call this from the GUI thread (it reads layers).
"""

from __future__ import annotations

import weakref
import zlib
from typing import Any

import numpy as np

from napari_unet._widgets.layers.proxies import unwrap_proxy

#: Largest layer (bytes) whose checksum is taken: about 20 ms (measured 44 ms for 64 MiB on a busy
#: core); a row change in Fine-tune may check two layers. Larger layers rely on the paint events.
CHECKSUM_BYTES = 32 * 2**20

_EDITED: weakref.WeakSet[Any] = weakref.WeakSet()
_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()
_CHECKSUMS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def mark_written(layer: Any) -> None:
    """``layer`` now holds what Segment wrote: no edits, watched from now on."""
    layer = unwrap_proxy(layer)
    _EDITED.discard(layer)
    checksum = _checksum(layer.data)
    if checksum is None:
        _CHECKSUMS.pop(layer, None)
    else:
        _CHECKSUMS[layer] = checksum
    if layer not in _WATCHED:
        _WATCHED.add(layer)
        ref = weakref.ref(layer)
        layer.events.paint.connect(lambda *_: _mark_edited(ref))


def mark_edited(layer: Any) -> None:
    """Treat ``layer`` as holding edits (e.g. it is being trained on)."""
    _EDITED.add(unwrap_proxy(layer))


def has_edits(layer: Any) -> bool:
    """True if ``layer`` was painted, filled or erased (or its data changed) since Segment wrote it.

    Layers Segment never wrote (opened from a file, made by hand) count as
    edited: they are the user's.
    """
    layer = unwrap_proxy(layer)
    if layer in _EDITED:
        return True
    if layer not in _WATCHED:
        return True
    expected = _CHECKSUMS.get(layer)
    return expected is not None and _checksum(layer.data) != expected


def _mark_edited(ref: weakref.ref) -> None:
    layer = ref()
    if layer is not None:
        _EDITED.add(layer)


def _checksum(data: Any) -> int | None:
    """CRC-32 of a numpy array's bytes (with its shape and dtype); None for other or large data."""
    if not isinstance(data, np.ndarray) or data.nbytes > CHECKSUM_BYTES:
        return None
    head = f"{data.shape}{data.dtype}".encode()
    return zlib.crc32(np.ascontiguousarray(data).data, zlib.crc32(head))
