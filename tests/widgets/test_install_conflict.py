"""The plugin is found under its distribution name, and a foreign napari-unet in the environment is reported."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._distribution import DISTRIBUTION  # noqa: E402
from napari_unet._widgets.forms import notify  # noqa: E402

pytestmark = pytest.mark.gui


def test_segment_dock_found_under_the_distribution_name_warns_about_a_foreign_napari_unet(
    make_napari_viewer, monkeypatch
):
    shown: list[str] = []
    monkeypatch.setattr(notify, "install_conflict", lambda: "the distribution 'napari-unet' 1.0.0 is installed")
    monkeypatch.setattr(notify, "show_warning", shown.append)
    notify.warn_install_conflict.cache_clear()
    try:
        viewer = make_napari_viewer()
        _dock, widget = viewer.window.add_plugin_dock_widget(DISTRIBUTION, "Segment")
        viewer.window.add_plugin_dock_widget(DISTRIBUTION, "Export")
    finally:
        notify.warn_install_conflict.cache_clear()
    assert type(widget).__name__ == "SegmentWidget"
    assert shown == [f"{DISTRIBUTION}: the distribution 'napari-unet' 1.0.0 is installed"]  # once, not per widget
