"""Following the viewer's layers: one place that tells a widget when its layer choosers are stale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["follow_layers"]


def follow_layers(
    widget: Any,
    viewer: Any,
    on_change: Callable[..., None],
    /,
    *,
    on_removed: Callable[[Any], None] | None = None,
) -> None:
    """Call ``on_change`` whenever a layer is added, removed, moved or renamed, until ``widget`` is destroyed.

    Parameters
    ----------
    widget : QWidget
        The widget whose choosers follow the layers; its ``destroyed`` signal
        ends the connections (the viewer outlives a closed dock widget).
    viewer : napari.viewer.Viewer
        The viewer (or its proxy).
    on_change : callable
        Called with no argument (or an event, which it should ignore).
    on_removed : callable, optional
        Called with the removed layer before ``on_change``, e.g. to drop a job
        that was started from it.
    """
    events = viewer.layers.events

    def inserted(event: Any) -> None:
        event.value.events.name.connect(on_change)
        on_change()

    def removed(event: Any) -> None:
        event.value.events.name.disconnect(on_change)
        if on_removed is not None:
            on_removed(event.value)
        on_change()

    connections = [(events.inserted, inserted), (events.removed, removed), (events.moved, on_change)]
    connections.append((events.reordered, on_change))
    connections += [(layer.events.name, on_change) for layer in viewer.layers]
    for signal, slot in connections:
        signal.connect(slot)

    def disconnect(*_: Any) -> None:
        events.inserted.disconnect(inserted)
        events.removed.disconnect(removed)
        events.moved.disconnect(on_change)
        events.reordered.disconnect(on_change)
        for layer in viewer.layers:
            layer.events.name.disconnect(on_change)

    widget.destroyed.connect(disconnect)
