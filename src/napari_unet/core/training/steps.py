"""The parts of one training run that :func:`~.loop.train_job` puts together.

- :func:`make_optimizer` and :func:`make_schedule`: the optimiser and its
  learning-rate schedule (a 20-step warm-up, then constant or cosine).
- :class:`BatchLoader`: batches cut and augmented in helper threads while the
  network trains.
- :class:`RetryingStep`: one optimiser step that, on an out-of-memory error,
  halves the patches sent through the network at once and tries again, and
  that can pull the weights toward the starting ones (L2-SP).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_unet.core.errors import UserError
from napari_unet.core.inference.device import autocast, empty_cache, is_out_of_memory
from napari_unet.core.inference.predict import OutOfMemoryError
from napari_unet.core.progress import Progress, Stage
from napari_unet.core.training.annotations import IGNORE
from napari_unet.core.training.losses import dice_cross_entropy, masked_cross_entropy


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss became NaN or infinite; a lower learning rate usually helps."""


if TYPE_CHECKING:
    from napari_unet.core.training.loop import TrainingSettings

#: One training patch: (input (Y, X, C), classes (Y, X), weights (Y, X)).
Patch = tuple[np.ndarray, np.ndarray, np.ndarray]
#: Steps of the linear learning-rate warm-up.
WARM_UP_STEPS = 20


def make_optimizer(net: torch.nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    """AdamW with weight decay, or the paper's SGD with momentum 0.99, as ``settings.optimizer`` says.

    Parameters
    ----------
    net : torch.nn.Module
        The network whose parameters are trained.
    settings : TrainingSettings
        ``optimizer``, ``learning_rate`` and ``weight_decay`` are used.
    """
    if settings.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=settings.learning_rate, momentum=0.99)
    return torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)


def make_schedule(
    optimizer: torch.optim.Optimizer, settings: TrainingSettings, /, *, started: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule: a linear warm-up, then constant or a cosine decay to zero.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimiser whose learning rate is scaled.
    settings : TrainingSettings
        ``schedule``, ``steps`` and ``max_seconds`` are used; the cosine
        reaches zero at the end of the steps or of the time, whichever comes
        first.
    started : float
        ``time.perf_counter()`` when training started (for ``max_seconds``).
    """

    def lr_factor(done: int) -> float:
        warm_up = min(1.0, (done + 1) / WARM_UP_STEPS)
        if settings.schedule == "constant":
            return warm_up
        progress = done / settings.steps
        if settings.max_seconds:
            progress = max(progress, (time.perf_counter() - started) / settings.max_seconds)
        return warm_up * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def make_scaler(device: torch.device, *, amp: bool) -> Any:
    """A gradient scaler for float16 mixed precision on CUDA devices without bfloat16; else None."""
    use_scaler = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda") if use_scaler else None


class BatchLoader:
    """Batches of patches, cut and augmented in helper threads while the network trains.

    numpy and scipy release the GIL, so the device is not kept waiting. Batch
    ``k`` uses random stream ``k mod n`` and at most ``n`` batches are in
    flight, so no stream is used by two threads at once and the sequence of
    batches is reproducible for a given number of threads ``n``. With one
    thread the batches come from ``rng`` itself.

    Parameters
    ----------
    cut : callable
        ``cut(rng)`` returns one patch.
    rng : numpy.random.Generator
        The stream of a single-threaded loader.
    settings : TrainingSettings
        ``loader_threads``, ``seed``, ``batch_size`` and ``steps`` are used.
    """

    def __init__(
        self, cut: Callable[[np.random.Generator], Patch], rng: np.random.Generator, settings: TrainingSettings
    ) -> None:
        self._cut = cut
        self._batch_size = settings.batch_size
        self._steps = settings.steps
        self._n = settings.loader_threads
        self._streams = [np.random.default_rng([settings.seed, i]) for i in range(self._n)] if self._n > 1 else [rng]
        self._pool = ThreadPoolExecutor(max_workers=self._n, thread_name_prefix="napari-unet-patches")
        self._pending: deque[Future[list[Patch]]] = deque(
            self._pool.submit(self._batch, self._streams[k]) for k in range(min(self._n, self._steps))
        )

    def _batch(self, stream: np.random.Generator) -> list[Patch]:
        return [self._cut(stream) for _ in range(self._batch_size)]

    def batch(self, step: int) -> list[Patch]:
        """The patches of ``step`` (counted from 1); starts cutting a later batch in its place."""
        patches = self._pending.popleft().result()
        ahead = step + len(self._pending)
        if ahead < self._steps:
            self._pending.append(self._pool.submit(self._batch, self._streams[ahead % self._n]))
        return patches

    def close(self) -> None:
        """Stop the helper threads; batches not started are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def backward(
    net: torch.nn.Module,
    patches: Sequence[Patch],
    at_once: int,
    *,
    device: torch.device,
    settings: TrainingSettings,
    scaler: Any,
) -> float:
    """Forward and backward one batch, ``at_once`` patches at a time (gradients add up); returns the loss.

    Each chunk's loss is weighted by its share of the batch's patches, so a
    batch split into chunks gives nearly the gradient of the whole batch (not
    exactly: the losses average over annotated pixels, which differ between
    chunks). Unsplit (``at_once >= len(patches)``) it is the plain step.
    """
    total = 0.0
    for start in range(0, len(patches), at_once):
        chunk = patches[start : start + at_once]
        x = torch.from_numpy(np.stack([p[0] for p in chunk])).permute(0, 3, 1, 2).to(device)
        y = torch.from_numpy(np.stack([p[1] for p in chunk]).astype(np.int64)).to(device)
        w = torch.from_numpy(np.stack([p[2] for p in chunk]).astype(np.float32)).to(device)
        # mixed precision trains on CUDA only: bfloat16 training on the CPU has not been measured
        with autocast(device, enabled=settings.amp and device.type == "cuda"):
            logits = net(x)
        logits = logits.float()
        if settings.loss == "dice_ce":
            loss = dice_cross_entropy(logits, y, weights=w, ignore_index=IGNORE)
        else:
            loss = masked_cross_entropy(logits, y, weights=w, ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                "training diverged (the loss became NaN or Inf); lower the learning rate and try again"
            )
        share = loss * (len(chunk) / len(patches))
        if scaler is not None:
            scaler.scale(share).backward()
        else:
            share.backward()
        total += float(share.detach())
    return total


class RetryingStep:
    """One optimiser and schedule step that survives running out of device memory.

    On an out-of-memory error the batch is sent through the network in
    chunks of half as many patches (the gradients add up, so a step still
    uses the whole batch), and the smaller chunk size is kept for the
    following steps. Out of memory for a single patch is an
    :class:`~napari_unet.core.inference.predict.OutOfMemoryError`.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        *,
        device: torch.device,
        settings: TrainingSettings,
        anchor: float = 0.0,
    ) -> None:
        self.net, self.optimizer, self.scheduler = net, optimizer, scheduler
        self.device, self.settings = device, settings
        self.scaler = make_scaler(device, amp=settings.amp)
        self.at_once = settings.batch_size  # patches through the network at once
        self.anchor = anchor
        # L2-SP: the starting weights that the penalty pulls toward
        self._start = [p.detach().clone() for p in net.parameters()] if anchor > 0 else []

    def __call__(self, patches: Sequence[Patch], step: int) -> Generator[Progress, None, float]:
        """Train on ``patches``; yields a notice for every halving, returns the loss."""
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            try:
                loss = backward(
                    self.net, patches, self.at_once, device=self.device, settings=self.settings, scaler=self.scaler
                )
                break
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                if self.at_once == 1:
                    raise OutOfMemoryError(
                        f"out of memory on {self.device} even for one {self.settings.patch_size}-pixel patch at a "
                        "time; lower the patch size (Advanced options) or train on the CPU"
                    ) from None
            yield self._halve(step, len(patches))
        self._pull_to_start()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return loss

    def _pull_to_start(self) -> None:
        """Add the gradient of ``anchor * sum((w - w_start) ** 2)`` (L2-SP) to every trained weight."""
        if not self._start:
            return
        scale = 1.0 if self.scaler is None else float(self.scaler.get_scale())
        with torch.no_grad():
            for param, start in zip(self.net.parameters(), self._start):
                if param.grad is not None:
                    param.grad.add_(param - start, alpha=2 * self.anchor * scale)

    def _halve(self, step: int, batch: int) -> Progress:
        self.optimizer.zero_grad(set_to_none=True)
        empty_cache(self.device)
        self.at_once = max(1, self.at_once // 2)
        return Progress(
            Stage.NOTICE,
            step,
            self.settings.steps,
            message=(
                f"Out of memory on {self.device}: training goes on with {self.at_once} patch(es) at a time "
                f"(still {batch} per step, so the result is the same kind of training, only slower)."
            ),
        )
