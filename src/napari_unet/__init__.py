"""napari-unet: U-Net segmentation for napari, with a headless core.

Importing this package does not import napari or Qt; the widgets live in
:mod:`napari_unet._widgets` and are loaded by napari through the manifest.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
