"""One model per napari viewer, shared by the Segment and Fine-tune widgets.

A :class:`ModelSession` holds the model in use, where it came from, the
model before it (so a fine-tuned model can be reverted with one click), and
the engine cache of the viewer's segmentations.
Widgets of the same viewer get the same session from :func:`session_for`
and listen to :attr:`ModelSession.model_changed`; they never hold each other.
"""

from __future__ import annotations

import weakref
from typing import Any

from psygnal import Signal

from napari_unet._widgets.layers.corrections import CorrectionSet
from napari_unet._widgets.layers.proxies import unwrap_proxy
from napari_unet._widgets.layers.results import ResultLayers
from napari_unet.core import SegmentationModel
from napari_unet.core.inference.engine import EngineCache


class ModelSession:
    """The model of one viewer.

    Attributes
    ----------
    model : SegmentationModel or None
        The model the widgets use.
    source : str
        Where it came from: a shipped model's key, a file path, or a label
        such as ``"fine-tuned (unsaved)"``; ``""`` when there is no model.
    previous_model : SegmentationModel or None
        The model before the last :meth:`set_model`, for :meth:`revert`.
    previous_source : str
        Where the previous model came from.
    results : ResultLayers
        Which layers hold the results of which image layer, so that every
        widget of the viewer (and a reopened one) finds and replaces them.
    engines : EngineCache
        The engine choices of this viewer's segmentations: under ``"auto"`` a
        model moves to OpenVINO once this session has run enough work with it
        (and stays converted until its weights change).
    corrections : CorrectionSet
        The images corrected in this session (and read from folders): the
        training set of the next Fine-tune.
    model_changed : psygnal.Signal
        Emitted with the new model (or None) after every change.
    training_changed : psygnal.Signal
        Emitted when Fine-tune starts or stops training on labels layers.
    """

    model_changed = Signal(object)
    training_changed = Signal()

    def __init__(self) -> None:
        self.model: SegmentationModel | None = None
        self.source: str = ""
        self.previous_model: SegmentationModel | None = None
        self.previous_source: str = ""
        self.results = ResultLayers()
        self.engines = EngineCache()
        self.corrections = CorrectionSet()
        self._training: weakref.WeakSet[Any] = weakref.WeakSet()

    def set_training(self, labels_layers: list[Any]) -> None:
        """Fine-tune trains on ``labels_layers`` now (an empty list: training is over)."""
        self._training = weakref.WeakSet(unwrap_proxy(layer) for layer in labels_layers)
        self.training_changed.emit()

    def is_training_on(self, layer: Any) -> bool:
        """True while Fine-tune trains on labels layer ``layer``."""
        return unwrap_proxy(layer) in self._training

    def training_layers(self) -> list[Any]:
        """The labels layers Fine-tune trains on now (napari layers, not proxies)."""
        return list(self._training)

    def set_model(self, model: SegmentationModel | None, source: str) -> None:
        """Make ``model`` the current model; the current one becomes the previous one.

        Setting the model that is already current (same object) changes nothing
        and emits nothing.
        """
        if model is self.model and source == self.source:
            return
        self.previous_model, self.previous_source = self.model, self.source
        self.model, self.source = model, source if model is not None else ""
        self.model_changed.emit(self.model)

    @property
    def can_revert(self) -> bool:
        """True if there is a previous model to go back to."""
        return self.previous_model is not None

    def revert(self) -> None:
        """Swap the current and the previous model (reverting twice is a no-op)."""
        if self.previous_model is None:
            raise ValueError("there is no previous model to go back to")
        self.set_model(self.previous_model, self.previous_source)

    def __repr__(self) -> str:
        return f"ModelSession(model={self.model!r}, source={self.source!r})"


_SESSIONS: weakref.WeakKeyDictionary[Any, ModelSession] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> ModelSession:
    """The model session of ``viewer`` (a napari Viewer or the proxy a plugin gets).

    The same viewer always gets the same session; the session goes away with
    the viewer (it is kept in a weak-key dictionary, not as a global model).
    """
    key = unwrap_proxy(viewer)
    session = _SESSIONS.get(key)
    if session is None:
        session = _SESSIONS[key] = ModelSession()
    return session
