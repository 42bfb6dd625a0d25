"""The training recipe of the Fine-tune widget, folded away under "Advanced options"."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget
from superqt import QCollapsible

from napari_unet._widgets.forms.devices import device_combo
from napari_unet._widgets.forms.folding import set_fold_tip
from napari_unet.core.training.loop import TrainingSettings


class TrainingOptions(QCollapsible):
    """Steps, learning rate, patches, optimiser, loss, validation, device: a :class:`TrainingSettings` editor.

    The defaults are those of :class:`TrainingSettings` (they suit fine-tuning).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Advanced options", parent, expandedIcon="▼", collapsedIcon="▶")
        self.steps_spin = _spin(
            1, 1_000_000, 2000, "Most optimiser steps; the time budget usually ends training first."
        )
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(0.00001, 1.0)
        self.lr_spin.setSingleStep(0.0001)
        self.lr_spin.setValue(TrainingSettings.learning_rate)
        self.lr_spin.setToolTip("Step size. AdamW: 0.001 (fine-tuning and from scratch); SGD (the paper): 0.01.")
        self.batch_spin = _spin(1, 256, TrainingSettings.batch_size, "Patches per step; lower it if memory runs out.")
        self.patch_spin = _spin(16, 2048, TrainingSettings.patch_size, "Side of the training patches in pixels.")
        self.patch_spin.setSingleStep(16)
        self.patch_spin.setSuffix(" px")
        self.optimizer_combo = QComboBox()
        self.optimizer_combo.addItem("AdamW", "adamw")
        self.optimizer_combo.addItem("SGD, momentum 0.99 (the paper)", "sgd")
        self.optimizer_combo.setToolTip(
            "AdamW is forgiving; SGD follows the U-Net paper and needs a larger learning rate."
        )
        self.loss_combo = QComboBox()
        self.loss_combo.addItem("Weighted cross-entropy (the paper)", "ce")
        self.loss_combo.addItem("Dice + cross-entropy", "dice_ce")
        self.loss_combo.setToolTip("Dice + cross-entropy helps when one class is rare.")
        self.mistake_spin = QDoubleSpinBox()
        self.mistake_spin.setRange(1.0, 100.0)
        self.mistake_spin.setSingleStep(0.5)
        self.mistake_spin.setValue(TrainingSettings.mistake_weight)
        self.mistake_spin.setSuffix(" ×")
        self.mistake_spin.setToolTip(
            "Pixels where your labels disagree with the model's own prediction (its mistakes) weigh this many "
            "times more. 1 = no extra weight (and no extra prediction before training)."
        )
        self.validation_spin = QSpinBox()
        self.validation_spin.setRange(0, 50)
        self.validation_spin.setSingleStep(5)
        self.validation_spin.setValue(20)
        self.validation_spin.setSuffix(" % held back")
        self.validation_spin.setSpecialValueText("none")
        self.validation_spin.setToolTip(
            "Part of the annotation held back to check that training does no harm (whole planes of a stack, "
            "otherwise a band of rows or columns), never what you corrected. The latest model no worse on it "
            "is kept. none: keep the last model."
        )
        self.validate_spin = _spin(1, 100_000, TrainingSettings.validate_every, "Steps between two measurements.")
        self.augment_check = QCheckBox("Augment (deform, flip, rotate, vary intensity)")
        self.augment_check.setChecked(True)
        self.augment_check.setToolTip("Makes a little annotation go further, as in the paper.")
        self.device_combo = device_combo("Train")
        self.device_combo.setToolTip("Where to train; a missing GPU falls back to the CPU.")
        self.scratch_check = QCheckBox("Train from scratch (forget the model's weights)")
        self.scratch_check.setToolTip(
            "Start from random weights with the model's architecture and classes. Needs much more "
            "annotation and time; the metric has no 'before' value."
        )

        advanced_form = QWidget()
        form = QFormLayout(advanced_form)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for text, widget in (
            ("Max steps", self.steps_spin),
            ("Learning rate", self.lr_spin),
            ("Batch size", self.batch_spin),
            ("Patch size", self.patch_spin),
            ("Optimizer", self.optimizer_combo),
            ("Loss", self.loss_combo),
            ("Mistake weight", self.mistake_spin),
            ("Validation", self.validation_spin),
            ("Validate every", self.validate_spin),
            ("Device", self.device_combo),
        ):
            form.addRow(text, widget)
        form.addRow(self.augment_check)
        form.addRow(self.scratch_check)
        self.addWidget(advanced_form)
        set_fold_tip(self, "The training recipe; the defaults suit fine-tuning on a few images.")
        self.layout().setContentsMargins(0, 0, 0, 0)
        self.content().layout().setContentsMargins(0, 0, 0, 0)

    @property
    def validation_fraction(self) -> float:
        """Part of the annotation held back for validation (0: none)."""
        return self.validation_spin.value() / 100

    def settings(self, *, max_seconds: float | None = None) -> TrainingSettings:
        """The recipe the fields describe, with a time budget.

        Raises
        ------
        ValueError
            If the fields make no valid recipe.
        """
        return TrainingSettings(
            steps=self.steps_spin.value(),
            max_seconds=max_seconds,
            patch_size=self.patch_spin.value(),
            batch_size=self.batch_spin.value(),
            optimizer=self.optimizer_combo.currentData(),
            learning_rate=self.lr_spin.value(),
            loss=self.loss_combo.currentData(),
            mistake_weight=self.mistake_spin.value(),
            augment=self.augment_check.isChecked(),
            validate_every=self.validate_spin.value(),
            device=self.device_combo.currentData(),
        )


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
