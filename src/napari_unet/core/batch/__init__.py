"""Many files in one run: the command line's ``segment``, for notebooks too.

- :mod:`.paths`: which images a batch reads and where their results go (one rule
  for TIFF and OME-Zarr outputs, one overwrite guard).
- :mod:`.files`: TIFF inputs to TIFF outputs, one summary row per file.
- :mod:`.zarr_files`: inputs segmented block by block into OME-Zarr.

The names below were the module ``napari_unet.core.batch`` before the core was grouped
into packages, and stay importable from here.
"""

from napari_unet.core.batch.files import (
    SUMMARY_FIELDS,
    TIFF_SUFFIXES,
    FileSummary,
    InputError,
    expand_inputs,
    output_paths,
    per_file_job,
    refuse_overwriting_inputs,
    segment_files,
    segment_files_job,
    write_summary,
)

__all__ = [
    "SUMMARY_FIELDS",
    "TIFF_SUFFIXES",
    "FileSummary",
    "InputError",
    "expand_inputs",
    "output_paths",
    "per_file_job",
    "refuse_overwriting_inputs",
    "segment_files",
    "segment_files_job",
    "write_summary",
]
