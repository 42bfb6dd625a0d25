"""Files in and out: atomic writes, TIFF (ImageJ/Fiji), OME-Zarr, exporting results.

- :mod:`.atomic`: writing files and folders so a crash never leaves a half-written one.
- :mod:`.leftovers`: the hidden temporaries a killed writer leaves, removed or reported.
- :mod:`.tiff`: reading images with their calibration, writing labels and probabilities.
- :mod:`.ome_zarr`: lazy images (TIFF, zarr, OME-Zarr) and OME-Zarr results.
- :mod:`.export`: the export job of result layers.
"""
