"""Result layers: which layers hold the segmentation of which image layer.

A segmentation is bound to the image layer it started from, not to a layer
name: renaming either layer keeps the binding, deleting the result layer
makes the next run create a new one. Running again on the same image
replaces the data of its result layers instead of adding new ones.

Only call this from the GUI thread (it touches layers).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import napari.layers
import numpy as np
from psygnal import Signal

from napari_unet._widgets.layers.edits import has_edits, mark_written
from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet.core import SegmentationResult
from napari_unet.core.inference.layout import ImageLayout
from napari_unet.core.network.instances import smallest_label_dtype

#: Colormaps of the per-class probability layers after the background class.
_CLASS_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")
#: Key of the ``layer.metadata`` entry that marks a napari-unet result layer.
#: Its value is a dict: ``output`` ("instances", "classes" or "probabilities"),
#: ``source`` (the image layer's name when segmented), ``class_names`` and,
#: for probability layers, ``class_index``.
RESULT_KEY = "napari_unet"
#: Narrowest dtype of a result Labels layer in the viewer: painting object 256 must work.
#: (Export still writes the smallest type that fits, see :mod:`napari_unet.core.io.export`.)
EDIT_DTYPE = np.dtype(np.uint16)


def labels_name(image_name: str) -> str:
    """Name of the Labels layer made from image layer ``image_name``."""
    return f"{image_name} [U-Net]"


def editable_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` widened to at least :data:`EDIT_DTYPE` (a uint8 layer cannot hold label 256)."""
    if labels.dtype.kind in "ui" and labels.dtype.itemsize < EDIT_DTYPE.itemsize:
        return labels.astype(EDIT_DTYPE)
    return labels


def free_name(viewer: Any, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... : the first that no layer of ``viewer`` has."""
    taken = {layer.name for layer in viewer.layers}
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def probabilities_name(image_name: str, class_name: str) -> str:
    """Name of the probability layer of one class."""
    return f"{image_name} [U-Net probabilities] {class_name}"


@dataclass(frozen=True)
class Target:
    """Where a result goes: captured when a job starts, used when it ends.

    Attributes
    ----------
    source : napari.layers.Image
        The image layer the job started from.
    layout : ImageLayout
        Layout of the whole image layer data.
    plane : tuple of int or None
        Stack index of the one plane that was segmented, or None for all.
    scale, translate : tuple of float
        Spatial part of the source layer's transform (no channel axis).
    axis_labels, units : tuple of str
        The source layer's axis names and units without the channel axis
        (a time series stays one: its export is TYX, not ZYX).
    """

    source: Any
    layout: ImageLayout
    plane: tuple[int, ...] | None
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    axis_labels: tuple[str, ...] | None = None
    units: tuple[str, ...] | None = None

    @property
    def geometry(self) -> dict[str, Any]:
        """Keyword arguments that give a new layer the source's geometry."""
        extra: dict[str, Any] = {}
        if self.axis_labels is not None:
            extra["axis_labels"] = self.axis_labels
        if self.units is not None:
            extra["units"] = self.units
        return {"scale": self.scale, "translate": self.translate, **extra}

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of a whole result: the image without its channel axis."""
        return (*self.layout.stack_shape, *self.layout.plane_shape)


def make_target(source: Any, layout: ImageLayout, plane: tuple[int, ...] | None = None) -> Target:
    """Capture where the result of segmenting ``source`` must go."""
    keep = [a for a in range(len(source.scale)) if a != layout.channel_axis]
    return Target(
        source=source,
        layout=layout,
        plane=plane,
        scale=tuple(float(source.scale[a]) for a in keep),
        translate=tuple(float(source.translate[a]) for a in keep),
        axis_labels=_spatial(getattr(source, "axis_labels", None), keep),
        units=_spatial(getattr(source, "units", None), keep),
    )


def _spatial(values: Any, keep: list[int]) -> tuple[str, ...] | None:
    """``values`` (one per layer axis) without the channel axis, as strings; None if absent."""
    if values is None or len(values) <= max(keep, default=-1):
        return None
    return tuple(str(values[a]) for a in keep)


def shown_plane(viewer: Any, source: Any, layout: ImageLayout) -> tuple[int, ...]:
    """Stack index of ``source`` shown in ``viewer`` now (one entry per stack axis)."""
    point = np.asarray(source.world_to_data(viewer.dims.point), dtype=float)
    return tuple(int(np.clip(np.round(point[a]), 0, layout.shape[a] - 1)) for a in layout.stack_axes)


class ResultLayers:
    """The result layers of every image layer of one viewer.

    Holds only weak references: a deleted layer is forgotten, and nothing here
    keeps a viewer or a layer alive. :attr:`changed` is emitted after every
    :meth:`bind`, so other widgets (Export) can refresh what they offer.
    """

    changed = Signal()
    #: Emitted with (kept layer, new layer) when a result was written to a new layer
    #: because the old one holds the user's edits.
    edits_kept = Signal(object, object)

    def __init__(self) -> None:
        self._bindings: dict[tuple[int, str], tuple[weakref.ref, list[weakref.ref]]] = {}
        # every result layer ever bound (also ones a newer result replaced) -> its image layer
        self._origins: weakref.WeakKeyDictionary[Any, weakref.ref] = weakref.WeakKeyDictionary()

    def find(self, viewer: Any, source: Any, kind: str) -> list[Any]:
        """Result layers of ``kind`` ("labels" or "probabilities") of ``source`` still in ``viewer``.

        Returns the layers as ``viewer.layers`` gives them (proxies for plugins).
        """
        self._forget_dead()
        key = (id(unwrap_proxy(source)), kind)
        binding = self._bindings.get(key)
        if binding is None or binding[0]() is not unwrap_proxy(source):
            return []
        in_viewer = {id(unwrap_proxy(layer)): layer for layer in viewer.layers}
        found = [in_viewer.get(id(ref())) for ref in binding[1] if ref() is not None]
        return [layer for layer in found if layer is not None]

    def source_of(self, viewer: Any, layer: Any) -> Any | None:
        """The image layer (as ``viewer.layers`` gives it) whose current result ``layer`` is, or None."""
        self._forget_dead()
        wanted = unwrap_proxy(layer)
        for source_ref, layer_refs in self._bindings.values():
            if any(ref() is wanted for ref in layer_refs):
                source = source_ref()
                return next((s for s in viewer.layers if unwrap_proxy(s) is source), None)
        return None

    def origin_of(self, viewer: Any, layer: Any) -> Any | None:
        """The image layer ``layer`` was segmented from, also for a result a newer one replaced; or None."""
        ref = self._origins.get(unwrap_proxy(layer))
        source = None if ref is None else ref()
        if source is None:
            return None
        return next((s for s in viewer.layers if unwrap_proxy(s) is source), None)

    def sources(self, viewer: Any) -> list[Any]:
        """Image layers of ``viewer`` that have result layers in it, in layer-list order."""
        return [
            layer
            for layer in viewer.layers
            if self.find(viewer, layer, "labels") or self.find(viewer, layer, "probabilities")
        ]

    def bind(self, source: Any, kind: str, layers: Sequence[Any]) -> None:
        """Remember ``layers`` as the ``kind`` results of ``source``."""
        self._forget_dead()
        self._bindings[(id(unwrap_proxy(source)), kind)] = (
            weakref.ref(unwrap_proxy(source)),
            [weakref.ref(unwrap_proxy(layer)) for layer in layers],
        )
        for layer in layers:
            self._origins[unwrap_proxy(layer)] = weakref.ref(unwrap_proxy(source))
        self.changed.emit()

    def _forget_dead(self) -> None:
        dead = [key for key, (source, _) in self._bindings.items() if source() is None]
        for key in dead:
            del self._bindings[key]

    def show(self, viewer: Any, target: Target, result: SegmentationResult, *, outlines: bool = False) -> list[Any]:
        """Put ``result`` into the result layers of ``target.source``; returns them.

        Parameters
        ----------
        viewer : napari.viewer.Viewer
            Where the layers are.
        target : Target
            Where the result goes (captured when the job started).
        result : SegmentationResult
            Labels, probabilities or both (labels kept with their probabilities).
        outlines : bool
            Draw the Labels layer's objects as outlines (``contour=1``).
        """
        if result.output == "probabilities":
            assert result.probabilities is not None
            return self._show_probabilities(viewer, target, result.probabilities, result.class_names)
        assert result.labels is not None
        shown = [
            self._show_labels(viewer, target, result.labels, result.class_names, instances=result.output == "instances")
        ]
        set_contour(shown[0], outlines)
        if result.probabilities is not None:
            shown += self._show_probabilities(viewer, target, result.probabilities, result.class_names)
            # the probability layers are added above: keep the Labels layer (what the user corrects) on top
            labels = unwrap_proxy(shown[0])
            index = next(i for i, layer in enumerate(viewer.layers) if unwrap_proxy(layer) is labels)
            if index != len(viewer.layers) - 1:
                viewer.layers.move(index, len(viewer.layers))
        return shown

    def _show_labels(
        self, viewer: Any, target: Target, labels: np.ndarray, class_names: Sequence[str], *, instances: bool
    ) -> Any:
        existing = self.find(viewer, target.source, "labels")
        layer = existing[0] if existing else None
        kept = layer if layer is not None and has_edits(layer) else None
        labels = editable_labels(labels)
        if target.plane is not None:
            old = layer.data if layer is not None else None
            if kept is not None and isinstance(old, np.ndarray):
                old = old.copy()  # the other planes go on in the new layer; the edited layer stays as it is
            labels = _write_plane(old, target, labels, offset_ids=instances)
        metadata = {
            "output": "instances" if instances else "classes",
            "source": target.source.name,
            "class_names": list(class_names),
        }
        if kept is None and layer is not None and layer.ndim == labels.ndim:
            layer.data = labels  # in place: adding a layer stalls napari's GUI thread ten times longer
            _place(layer, target)
            unwrap_proxy(layer).metadata[RESULT_KEY] = metadata
            self.bind(target.source, "labels", [layer])
            mark_written(layer)
            return layer
        if kept is None and layer is not None:
            viewer.layers.remove(layer)
        # the user's corrections are never overwritten: the new result gets a layer of its own
        name = labels_name(target.source.name) if kept is None else free_name(viewer, labels_name(target.source.name))
        new = napari.layers.Labels(labels, name=name, metadata={RESULT_KEY: metadata}, **target.geometry)
        self.bind(target.source, "labels", [new])  # before it is added: whoever follows the selection sees
        mark_written(new)  # a fresh Segment result of this image
        viewer.add_layer(new)
        if kept is not None:
            self.edits_kept.emit(kept, new)
        return next(item for item in viewer.layers if unwrap_proxy(item) is new)

    def _show_probabilities(
        self, viewer: Any, target: Target, probabilities: np.ndarray, class_names: Sequence[str]
    ) -> list[Any]:
        class_axis = probabilities.ndim - 3
        per_class = [probabilities[(slice(None),) * class_axis + (c,)] for c in range(len(class_names))]
        existing = self.find(viewer, target.source, "probabilities")
        reuse = len(existing) == len(per_class) and all(layer.ndim == len(target.shape) for layer in existing)
        if target.plane is not None:
            old = [layer.data for layer in existing] if reuse else [None] * len(per_class)
            per_class = [_write_plane(o, target, p, offset_ids=False) for o, p in zip(old, per_class)]
        if reuse:
            for layer, data in zip(existing, per_class):
                layer.data = data
                _place(layer, target)
            layers = existing
        else:
            for layer in existing:
                viewer.layers.remove(layer)
            layers = []
            for c, (name, data) in enumerate(zip(class_names, per_class)):
                layers.append(
                    viewer.add_image(
                        data,
                        name=probabilities_name(target.source.name, name),
                        **target.geometry,
                        contrast_limits=(0.0, 1.0),
                        colormap="gray" if c == 0 else _CLASS_COLORMAPS[(c - 1) % len(_CLASS_COLORMAPS)],
                        blending="additive",
                        visible=c != 0,
                    )
                )
        for c, layer in enumerate(layers):
            unwrap_proxy(layer).metadata[RESULT_KEY] = {
                "output": "probabilities",
                "source": target.source.name,
                "class_names": list(class_names),
                "class_index": c,
            }
        self.bind(target.source, "probabilities", layers)
        return layers


def set_contour(layer: Any, outlines: bool) -> None:
    """Draw the objects of Labels ``layer`` as outlines (``contour=1``) or filled (0); no redraw if unchanged."""
    contour = 1 if outlines else 0
    if layer.contour != contour:
        layer.contour = contour


def _place(layer: Any, target: Target) -> None:
    """Give ``layer`` the geometry of ``target``; unchanged values are not set (each set redraws the layer)."""
    if not np.allclose(layer.scale, target.scale):
        layer.scale = target.scale
    if not np.allclose(layer.translate, target.translate):
        layer.translate = target.translate
    for name in ("axis_labels", "units"):
        wanted = getattr(target, name)
        if wanted is not None and tuple(str(v) for v in getattr(layer, name, wanted)) != wanted:
            setattr(layer, name, wanted)


def _write_plane(old: Any, target: Target, plane: np.ndarray, *, offset_ids: bool) -> np.ndarray:
    """A whole result with ``plane`` written at ``target.plane`` over ``old``.

    ``old`` is reused (written in place) when it is a writable numpy array of
    the right shape and a wide enough dtype; otherwise a new array is made,
    keeping ``old``'s other planes where its shape fits. Object IDs of a new
    plane are shifted above every ID already in ``old`` so they stay unique.
    """
    assert target.plane is not None
    shape = target.shape
    fits = old is not None and tuple(old.shape) == shape
    base = np.asarray(old) if fits else np.zeros(shape, plane.dtype)
    if offset_ids:
        shift = int(base.max(initial=0))
        plane = np.where(plane > 0, plane.astype(np.int64) + shift, 0)
        dtype = np.promote_types(base.dtype, smallest_label_dtype(int(plane.max(initial=0))))
    else:
        dtype = np.promote_types(base.dtype, plane.dtype)
    writable = fits and isinstance(old, np.ndarray) and old.flags.writeable and old.dtype == dtype
    out = old if writable else base.astype(dtype, copy=True)
    out[target.plane] = plane
    return out
