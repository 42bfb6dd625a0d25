"""The loss curve of the Fine-tune widget: smoothed, with the raw values faint behind (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from napari_unet._widgets.forms import curve_plot as cp  # noqa: E402

pytestmark = pytest.mark.gui


def test_smoothing_starts_at_the_first_value_and_calms_the_noise():
    rng = np.random.default_rng(0)
    raw = list(1.0 / np.arange(1, 201) + rng.normal(0, 0.05, 200))
    smooth = cp.smoothed(raw)
    assert len(smooth) == len(raw) and smooth[0] == raw[0]
    assert np.std(np.diff(smooth[100:])) < np.std(np.diff(raw[100:])) / 4  # step-to-step jitter, past the fast start
    assert abs(np.mean(smooth[-50:]) - np.mean(raw[-50:])) < 0.03  # follows the trend
    assert cp.smoothed(raw, weight=0.0) == raw


def _pixels(widget) -> np.ndarray:
    image = widget.grab().toImage()
    image = image.convertToFormat(image.Format.Format_RGB32)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)[..., 2::-1].astype(int)


def test_the_plot_draws_the_raw_loss_faint_and_the_smoothed_loss_bold(qtbot):
    plot = cp.CurvePlot()
    qtbot.addWidget(plot)
    plot.resize(300, 140)
    rng = np.random.default_rng(1)
    for step in range(1, 60):
        plot.add_point(step, 1.0 / step + float(rng.uniform(0, 0.5)))  # a jumpy loss
    pixels = _pixels(plot)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    loss = np.array([cp.LOSS_COLOR.red(), cp.LOSS_COLOR.green(), cp.LOSS_COLOR.blue()])
    alpha = cp.RAW_ALPHA / 255
    faint = background * (1 - alpha) + loss * alpha
    full_colour = int(np.all(np.abs(pixels - loss) < 12, axis=-1).sum())
    faint_colour = int(np.all(np.abs(pixels - faint) < 10, axis=-1).sum())
    # measured: about 420 full-colour pixels (the smooth curve) and 420 faint ones (the raw steps);
    # drawing the raw loss in full colour gives about 1150 full-colour pixels
    assert 100 < full_colour < 700
    assert faint_colour > 300
    plot.clear()
    plot.add_point(1, 0.5)
    plot.add_point(2, 0.4)
    assert plot.points == [(1, 0.5, None), (2, 0.4, None)]
