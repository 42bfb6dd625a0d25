"""napari widgets of napari-unet: thin layers over :mod:`napari_unet.core`.

napari imports the widget modules through the manifest (``napari.yaml``);
nothing here is imported by ``import napari_unet`` or by the core.
"""
