"""Images larger than memory, block by block into OME-Zarr, optionally on a dask cluster.

- :mod:`.blocks`: the block grid and its neighbours.
- :mod:`.label_merge`: objects joined across block borders, unique IDs over the image.
- :mod:`.to_zarr`: :func:`~.to_zarr.segment_to_zarr`, the job.
- :mod:`.cluster`: dask.distributed workers, one per GPU.
"""
