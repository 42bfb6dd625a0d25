"""Running block tasks on dask.distributed: a local cluster or any scheduler.

``distributed`` is optional (``pip install napari-unet-toolkit[cluster]``); it is
imported only when a cluster is used. Each worker process loads the model
once (it is scattered to every worker), reads its own blocks from the
input, writes them into the shared zarr output and returns only small
summaries, so the scheduler never holds image data.

A worker uses its own GPU when it has one: with one worker per GPU started
by ``dask_cuda.LocalCUDACluster`` (or by dask-jobqueue with one GPU per job),
``device="auto"`` finds it; when several GPUs are visible to each worker of
a plain local cluster, workers are spread over them by their names
(:func:`worker_device`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from napari_unet.core.progress import Job, Progress, Stage


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "running on a cluster needs dask.distributed: pip install 'napari-unet-toolkit[cluster]' (or 'distributed')"
        ) from exc
    return distributed


@contextlib.contextmanager
def connect(scheduler: Any, /, *, n_workers: int | None = None) -> Iterator[Any]:
    """A dask.distributed client for ``scheduler``; closes what it started.

    Parameters
    ----------
    scheduler : "local", str or distributed.Client
        ``"local"`` starts a local cluster of worker processes (one thread
        each, ``n_workers`` of them, by default one per GPU, or one per two
        CPU cores without a GPU); a
        string such as ``"tcp://10.0.0.5:8786"`` connects to a running
        scheduler (e.g. one started by dask-jobqueue on SLURM); a
        :class:`distributed.Client` is used as it is and left open.
    n_workers : int, optional
        Workers of a local cluster.

    Yields
    ------
    distributed.Client
    """
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler == "local":
        import torch

        workers = n_workers or torch.cuda.device_count() or max(1, (os.cpu_count() or 2) // 2)
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = distributed.Client(str(scheduler), timeout="20s")
    except OSError as exc:
        raise ConnectionError(f"no dask scheduler answered at {scheduler}; start one or check the address") from exc
    try:
        yield client
    finally:
        client.close()


def map_tasks(
    client: Any,
    function: Callable[..., Any],
    items: Sequence[Any],
    /,
    *,
    shared: dict[str, Any],
    on_result: Callable[[int, Any], None] | None = None,
    stage: Stage = Stage.BLOCKS,
    what: str = "blocks",
) -> Job[list[Any]]:
    """Run ``function(item, **shared)`` for every item on the cluster; a generator of progress.

    ``shared`` values are sent to every worker once. Closing the generator
    (cancelling the job) cancels the tasks not yet finished.

    Parameters
    ----------
    client : distributed.Client
        Where to run.
    function : callable
        Called as ``function(item, **shared)`` on a worker.
    items : sequence
        One task each.
    shared : dict
        Keyword arguments for every task.
    on_result : callable, optional
        Called here as ``on_result(index, result)`` as each task finishes,
        in any order; results are then not kept (bounded memory).
    stage : Stage
        Stage of the progress reports.
    what : str
        What the tasks are, for the reports' messages.

    Yields
    ------
    Progress
        Stage ``stage``, one report per finished task.

    Returns
    -------
    list
        The results in the order of ``items`` (all None with ``on_result``).
    """
    distributed = _distributed()
    scattered = {key: client.scatter(value, broadcast=True) for key, value in shared.items()}
    futures = [client.submit(function, item, pure=False, **scattered) for item in items]
    position = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        for done, future in enumerate(distributed.as_completed(futures), start=1):
            index = position[future.key]
            if on_result is None:
                results[index] = future.result()
            else:
                on_result(index, future.result())
            future.release()
            yield Progress(stage, done=done, total=len(futures), message=f"{done}/{len(futures)} {what} done")
    finally:
        unfinished = [f for f in futures if not f.done()]
        if unfinished:
            client.cancel(unfinished)
    return results


def in_worker() -> Any | None:
    """The dask worker running this code, or None outside one."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        return None


def worker_device(device: str, /) -> str:
    """The device a task should use: on a worker that sees several GPUs, one of them by the worker's name."""
    worker = in_worker()
    if device != "auto" or worker is None:
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count <= 1:
        return device
    name = str(worker.name)
    index = int(name) if name.isdigit() else sum(name.encode())
    return f"cuda:{index % count}"


def worker_engine_cache() -> Any:
    """The engine cache of this dask worker (kept on the worker, for the tasks it runs), or None outside one.

    Outside a worker a task gets None, so it counts its engine work on its own.
    """
    worker = in_worker()
    if worker is None:
        return None
    from napari_unet.core.inference.engine import EngineCache

    cache = getattr(worker, "_napari_unet_engines", None)
    if cache is None:
        cache = EngineCache()
        worker._napari_unet_engines = cache
    return cache


def worker_threads() -> int | None:
    """CPU threads a task on this worker may use (its thread count), or None outside a worker."""
    worker = in_worker()
    if worker is None:
        return None
    state = getattr(worker, "state", worker)
    threads = getattr(state, "nthreads", None)
    return int(threads) if threads else None
