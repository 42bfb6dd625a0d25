"""Training and fine-tuning with the paper's recipe, as a stoppable job.

The job works on a *copy* of the model: the model the user has keeps
working, unchanged, until the user accepts the result.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from napari_unet.core.inference.device import autocast, empty_cache, is_out_of_memory, resolve_device
from napari_unet.core.inference.predict import OutOfMemoryError, predict_plane_job
from napari_unet.core.inference.tiling import read_mirrored
from napari_unet.core.network.instances import class_map, instances_from_probabilities
from napari_unet.core.network.model_file import SegmentationModel
from napari_unet.core.network.normalization import apply_normalization
from napari_unet.core.network.unet import halo, output_size, valid_input_size
from napari_unet.core.progress import Job, Progress, Stage, run_job
from napari_unet.core.training.annotations import IGNORE, TrainingTarget
from napari_unet.core.training.augment import augment_sample
from napari_unet.core.training.losses import dice_cross_entropy, masked_cross_entropy
from napari_unet.core.training.metrics import class_iou, match_objects


@dataclass(frozen=True)
class TrainingSample:
    """One annotated plane.

    Attributes
    ----------
    image : numpy.ndarray
        (Y, X, C) raw intensities (any dtype), C = the model's input channels.
    target : TrainingTarget
        Classes (``IGNORE`` where unannotated) and per-pixel loss weights.
    instances : numpy.ndarray or None
        Ground-truth objects for validation by matched-object F1.
    name : str
        Shown in messages.
    """

    image: np.ndarray
    target: TrainingTarget
    instances: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(f"training images must be (Y, X, C), got shape {self.image.shape}")
        if self.image.shape[:2] != self.target.classes.shape:
            raise ValueError(
                f"image {self.name or ''} is {self.image.shape[:2]} but its labels are {self.target.classes.shape}; "
                "labels must have the same size as the image"
            )


@dataclass
class TrainingSettings:
    """How to train. Defaults suit fine-tuning on a few images.

    Parameters
    ----------
    steps : int
        Optimiser steps (an upper bound when ``max_seconds`` is set).
    max_seconds : float or None
        Stop after this much wall time.
    patch_size : int
        Output patch side; the input is larger for ``valid`` networks.
    batch_size : int
        Patches per step.
    optimizer : {"adamw", "sgd"}
        AdamW (modern default) or the paper's SGD with momentum 0.99.
    learning_rate : float
        1e-3 suits AdamW from scratch, 3e-4 fine-tuning, 0.01 SGD.
    weight_decay : float
        AdamW weight decay.
    loss : {"ce", "dice_ce"}
        Weighted cross-entropy (the paper), or Dice plus cross-entropy.
    mistake_weight : float
        Extra weight factor for pixels where the annotation differs from the
        model's previous prediction (see :func:`mistake_weights`).
    annotated_fraction : float
        Probability that a patch is centred on an annotated pixel.
    augment : bool
        Elastic deformation, flips, rotations and intensity changes.
    validate_every : int
        Steps between validations.
    seed : int
        Seed for patches, augmentation and initialisation.
    amp : bool
        Mixed precision on CUDA.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    schedule : {"constant", "cosine"}
        Learning rate after a 20-step warm-up: constant (suits interactive
        fine-tuning, which the user stops), or a cosine decay to zero at the
        end of ``steps`` or ``max_seconds``, whichever comes first (suits
        training with a fixed budget).
    loader_threads : int
        Threads that cut and augment patches while the network trains. Each
        has its own random stream derived from ``seed`` and batches are
        consumed in a fixed order, so a run is reproducible for a given
        number of threads.
    """

    steps: int = 200
    max_seconds: float | None = None
    patch_size: int = 128
    batch_size: int = 4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    loss: Literal["ce", "dice_ce"] = "ce"
    mistake_weight: float = 3.0
    annotated_fraction: float = 0.9
    augment: bool = True
    validate_every: int = 25
    seed: int = 0
    amp: bool = True
    device: str = "auto"
    schedule: Literal["constant", "cosine"] = "constant"
    loader_threads: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.patch_size < 8:
            raise ValueError("patch_size must be at least 8 pixels")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.loss not in ("ce", "dice_ce"):
            raise ValueError(f"loss must be ce or dice_ce, got {self.loss!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, got {self.schedule!r}")
        if self.loader_threads < 1:
            raise ValueError("loader_threads must be at least 1")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive")


@dataclass
class TrainingResult:
    """What a training job produced.

    Attributes
    ----------
    model : SegmentationModel
        The trained copy (best validation state if validation was given).
    baseline_metric, best_metric : float or None
        Validation metric before training and the best one reached.
    metric_name : str
        ``"F1@0.5"`` for instance models, ``"mean IoU"`` otherwise.
    steps_done : int
        Steps actually run.
    stopped : bool
        True if stopped early by the user.
    log : list of dict
        Step, loss and metric records.
    """

    model: SegmentationModel
    baseline_metric: float | None
    best_metric: float | None
    metric_name: str
    steps_done: int
    stopped: bool
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list)


def mistake_weights(target: TrainingTarget, previous: np.ndarray, /, *, factor: float) -> TrainingTarget:
    """Multiply the weight of pixels the previous model got wrong by ``factor``.

    Parameters
    ----------
    target : TrainingTarget
        The corrected annotation.
    previous : numpy.ndarray
        (Y, X) class indices predicted before the correction.
    factor : float
        Weight multiplier for disagreeing annotated pixels (1 = no change).
    """
    wrong = target.annotated & (previous != target.classes)
    weights = target.weights.copy()
    weights[wrong] *= factor
    return TrainingTarget(target.classes, weights)


class _PatchSampler:
    """Random training patches that favour annotated pixels."""

    def __init__(self, samples: Sequence[TrainingSample], model: SegmentationModel, settings: TrainingSettings) -> None:
        self.samples = samples
        self.settings = settings
        config = model.config
        step = config.downsampling
        if config.padding == "valid":
            self.input_size = valid_input_size(config, settings.patch_size)
            self.margin = halo(config)
            self.output_size = output_size(config, self.input_size)
        else:
            self.input_size = max(step, int(math.ceil(settings.patch_size / step)) * step)
            self.margin = 0
            self.output_size = self.input_size
        norm = model.description.normalization
        self.stats = [norm.statistics(s.image) for s in samples]
        self.annotated = [np.flatnonzero(s.target.annotated) for s in samples]
        sizes = np.array([max(len(a), 1) for a in self.annotated], dtype=np.float64)
        self.choice_p = sizes / sizes.sum()

    def patch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(rng.choice(len(self.samples), p=self.choice_p))
        sample = self.samples[i]
        h, w = sample.target.classes.shape
        out = self.output_size
        assert out is not None  # the input size was made valid in __init__
        annotated = self.annotated[i]
        if len(annotated) and rng.random() < self.settings.annotated_fraction:
            cy, cx = np.unravel_index(int(rng.choice(annotated)), (h, w))
            y0 = int(cy) - int(rng.integers(0, out))
            x0 = int(cx) - int(rng.integers(0, out))
        else:
            y0 = int(rng.integers(min(0, h - out), max(h - out, 0) + 1))
            x0 = int(rng.integers(min(0, w - out), max(w - out, 0) + 1))
        m = self.margin
        region = (slice(y0 - m, y0 - m + self.input_size), slice(x0 - m, x0 - m + self.input_size))
        image = apply_normalization(read_mirrored(sample.image, region), self.stats[i])
        classes = _crop_padded(sample.target.classes, region, IGNORE)
        weights = _crop_padded(sample.target.weights, region, 0.0)
        if self.settings.augment:
            # the paper warps whole 512 px images with sigma 10 px on a 3x3 grid;
            # on a smaller patch the same grid needs proportionally smaller shifts
            sigma = float(np.clip(10.0 * self.input_size / 512, 2.0, 10.0))
            image, classes, weights = augment_sample(image, classes, weights, rng=rng, elastic_sigma=sigma)
        if m:
            classes = classes[m : m + out, m : m + out]
            weights = weights[m : m + out, m : m + out]
        return image, classes, weights


def _crop_padded(array: np.ndarray, region: tuple[slice, slice], fill: float) -> np.ndarray:
    """Crop ``region`` from a 2-D array, filling outside with ``fill``."""
    h, w = array.shape
    out = np.full((region[0].stop - region[0].start, region[1].stop - region[1].start), fill, dtype=array.dtype)
    ys = slice(max(region[0].start, 0), min(region[0].stop, h))
    xs = slice(max(region[1].start, 0), min(region[1].stop, w))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[
            ys.start - region[0].start : ys.stop - region[0].start,
            xs.start - region[1].start : xs.stop - region[1].start,
        ] = array[ys, xs]
    return out


def evaluate(model: SegmentationModel, samples: Sequence[TrainingSample], /, *, device: torch.device) -> float:
    """Validation metric of ``model`` on annotated samples.

    Matched-object F1 at IoU 0.5 when the model separates objects and the
    samples carry ground-truth instances; otherwise the mean IoU of the
    non-background classes over annotated pixels.
    """
    use_f1 = model.description.instance_rule.method != "none" and all(s.instances is not None for s in samples)
    scores = []
    for sample in samples:
        # PyTorch: the weights change between validations, a converted copy would be stale at once
        job = predict_plane_job(sample.image, model, device=device, amp=False, engine="torch")
        probs = run_job(job)
        if use_f1:
            pred = instances_from_probabilities(probs, model.description.instance_rule)
            scores.append(match_objects(sample.instances, pred, threshold=0.5).f1)  # type: ignore[arg-type]
        else:
            ious = class_iou(
                sample.target.classes,
                class_map(probs),
                n_classes=model.config.n_classes,
                ignore=~sample.target.annotated,
            )
            scores.append(float(np.nanmean(ious[1:])) if np.isfinite(ious[1:]).any() else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def metric_name(model: SegmentationModel, samples: Sequence[TrainingSample]) -> str:
    """Name of the metric :func:`evaluate` reports."""
    if model.description.instance_rule.method != "none" and all(s.instances is not None for s in samples):
        return "F1@0.5"
    return "mean IoU"


def _backward(
    net: torch.nn.Module,
    patches: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
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
        with autocast(device, enabled=settings.amp):
            logits = net(x)
        logits = logits.float()
        if settings.loss == "dice_ce":
            loss = dice_cross_entropy(logits, y, weights=w, ignore_index=IGNORE)
        else:
            loss = masked_cross_entropy(logits, y, weights=w, ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                "training diverged (the loss became NaN or Inf); lower the learning rate and try again"
            )
        share = loss * (len(chunk) / len(patches))
        if scaler is not None:
            scaler.scale(share).backward()
        else:
            share.backward()
        total += float(share.detach())
    return total


def _only_class(samples: Sequence[TrainingSample]) -> int | None:
    """The one class annotated in all ``samples``, or None if there are several."""
    present: set[int] = set()
    for s in samples:
        present.update(int(c) for c in np.unique(s.target.classes[s.target.annotated]))
        if len(present) > 1:
            return None
    return present.pop() if present else None


def train_job(
    model: SegmentationModel,
    samples: Sequence[TrainingSample],
    /,
    *,
    settings: TrainingSettings | None = None,
    validation: Sequence[TrainingSample] = (),
    stop: threading.Event | Callable[[], bool] | None = None,
    from_scratch: bool = False,
    record: dict[str, Any] | None = None,
) -> Job[TrainingResult]:
    """Train a copy of ``model`` on annotated samples; a generator of progress.

    Parameters
    ----------
    model : SegmentationModel
        Starting point; never modified.
    samples : sequence of TrainingSample
        Annotated training planes.
    settings : TrainingSettings, optional
        Recipe; defaults suit fine-tuning.
    validation : sequence of TrainingSample
        Held-out planes; the best model on them is kept.
    stop : threading.Event or callable, optional
        When set (or returning True), training ends after the current step
        (before the next one starts) and the best model validated so far is
        returned, without a last validation: Stop must answer in well under a
        second, and a validation pass can take seconds. Without validation
        samples the last model is returned. Closing the generator instead
        abandons the job.
    from_scratch : bool
        Re-initialise the weights instead of fine-tuning.
    record : dict, optional
        Extra facts (data used, ...) for the model's training history.

    Yields
    ------
    Progress
        Stage ``"train"`` after every step, with ``data`` holding ``loss``
        and, after validations, ``metric`` and ``best``. ``data["model"]`` is
        the model being trained: a consumer may predict with it for a preview
        between steps (in the thread that runs the job; the next step puts
        the network back into training mode).

    Returns
    -------
    TrainingResult
    """
    settings = settings or TrainingSettings()
    if not samples:
        raise ValueError("no annotated images to train on; paint labels first")
    for s in samples:
        if not s.target.annotated.any():
            raise ValueError(f"image {s.name or ''} has no annotated pixels; paint some labels or leave it out")
        top = int(s.target.classes.max())
        if top >= model.config.n_classes:
            raise ValueError(
                f"labels of {s.name or 'an image'} use class {top}, but the model has only "
                f"{model.config.n_classes} classes ({', '.join(model.description.class_names)})"
            )
        if s.image.shape[-1] != model.config.in_channels:
            raise ValueError(
                f"image {s.name} has {s.image.shape[-1]} channels; the model expects {model.config.in_channels}"
            )
    only = _only_class(samples)
    if only is not None:
        names = model.description.class_names
        others = ", ".join(repr(n) for i, n in enumerate(names) if i != only)
        yield Progress(
            Stage.NOTICE,
            message=(
                f"Only the class {names[only]!r} is annotated, so training can only teach the model to predict "
                f"{names[only]!r} everywhere. Paint some pixels of {others} too, unless that is what you want."
            ),
        )
    should_stop: Callable[[], bool]
    if stop is None:
        should_stop = lambda: False  # noqa: E731
    elif isinstance(stop, threading.Event):
        should_stop = stop.is_set
    else:
        should_stop = stop
    device = resolve_device(settings.device)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    work = model.copy()
    if from_scratch:
        work.network.reset_parameters()
    net = work.network.to(device)
    name = metric_name(work, validation) if validation else ""
    # Stop pressed while the samples were prepared: do not spend seconds on the baseline either
    measure = validation and not from_scratch and not should_stop()
    baseline = evaluate(work, validation, device=device) if measure else None
    best = baseline if baseline is not None else -math.inf
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if validation:
        yield Progress(
            Stage.TRAIN,
            0,
            settings.steps,
            message=f"before training: {name} {baseline if baseline is not None else float('nan'):.3f}",
            data={"metric": baseline, "best": baseline, "metric_name": name},
        )
    sampler = _PatchSampler(samples, work, settings)
    started = time.perf_counter()  # the time budget is for training, not for the baseline check
    if settings.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=settings.learning_rate, momentum=0.99)
    else:
        optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)

    def lr_factor(done: int) -> float:
        warm_up = min(1.0, (done + 1) / 20)
        if settings.schedule == "constant":
            return warm_up
        progress = done / settings.steps
        if settings.max_seconds:
            progress = max(progress, (time.perf_counter() - started) / settings.max_seconds)
        return warm_up * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    use_scaler = settings.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    log: list[dict[str, Any]] = []
    stopped = False
    done = 0  # steps completed
    # the next batches are cut and augmented in helper threads while the
    # network trains on this one (numpy/scipy release the GIL), so the device
    # is not kept waiting. Batch k uses stream k mod n and at most n batches
    # are in flight, so no stream is used by two threads at once and the
    # sequence of batches is reproducible.
    n_loaders = settings.loader_threads
    streams = [np.random.default_rng([settings.seed, i]) for i in range(n_loaders)] if n_loaders > 1 else [rng]
    prefetcher = ThreadPoolExecutor(max_workers=n_loaders, thread_name_prefix="napari-unet-patches")

    def next_batch(stream: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [sampler.patch(stream) for _ in range(settings.batch_size)]

    pending = deque(prefetcher.submit(next_batch, streams[k]) for k in range(min(n_loaders, settings.steps)))
    at_once = settings.batch_size  # patches through the network at once; halved on out-of-memory errors
    try:
        for step in range(1, settings.steps + 1):
            if should_stop():  # set while the last step or a preview ran: do not start another step
                stopped = True
                break
            net.train()
            patches = pending.popleft().result()
            if step + len(pending) < settings.steps:
                pending.append(prefetcher.submit(next_batch, streams[(step + len(pending)) % n_loaders]))
            while True:
                optimizer.zero_grad(set_to_none=True)
                try:
                    loss_value = _backward(net, patches, at_once, device=device, settings=settings, scaler=scaler)
                    break
                except (RuntimeError, MemoryError) as exc:
                    if not is_out_of_memory(exc):
                        raise
                    if at_once == 1:
                        raise OutOfMemoryError(
                            f"out of memory on {device} even for one {settings.patch_size}-pixel patch at a time; "
                            "lower the patch size (Advanced options) or train on the CPU"
                        ) from None
                optimizer.zero_grad(set_to_none=True)
                empty_cache(device)
                at_once = max(1, at_once // 2)
                yield Progress(
                    Stage.NOTICE,
                    step,
                    settings.steps,
                    message=(
                        f"Out of memory on {device}: training goes on with {at_once} patch(es) at a time "
                        f"(still {len(patches)} per step, so the result is the same kind of training, only slower)."
                    ),
                )
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            entry: dict[str, Any] = {"step": step, "loss": loss_value, "seconds": time.perf_counter() - started}
            out_of_time = settings.max_seconds is not None and time.perf_counter() - started >= settings.max_seconds
            stopped = should_stop()
            last = step == settings.steps or out_of_time or stopped
            done = step
            # a stopped job keeps the best model validated so far: no validation pass after Stop
            if validation and not stopped and (step % settings.validate_every == 0 or last):
                net.eval()
                metric = evaluate(work, validation, device=device)
                entry["metric"] = metric
                if metric > best:
                    best = metric
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                entry["best"] = best
            log.append(entry)
            yield Progress(
                Stage.TRAIN,
                step,
                settings.steps,
                message=f"step {step}/{settings.steps}, loss {entry['loss']:.4f}",
                data={**entry, "metric_name": name, "model": work},
            )
            if last:
                break
    finally:
        prefetcher.shutdown(wait=True, cancel_futures=True)
    if validation:
        net.load_state_dict(best_state)
    net.eval()
    seconds = time.perf_counter() - started
    history_entry = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "kind": "from scratch" if from_scratch else "fine-tune",
        "settings": asdict(settings),
        "images": [s.name for s in samples],
        "validation_images": [s.name for s in validation],
        "steps": done,
        "seconds": round(seconds, 1),
        "metric_name": name or None,
        "baseline_metric": baseline,
        "best_metric": best if validation and math.isfinite(best) else None,
        "final_loss": log[-1]["loss"] if log else None,
        **(record or {}),
    }
    work.description.training_history.append(history_entry)
    work.network.cpu()
    return TrainingResult(
        model=work,
        baseline_metric=baseline,
        best_metric=best if validation and math.isfinite(best) else None,
        metric_name=name,
        steps_done=done,
        stopped=stopped,
        seconds=seconds,
        log=log,
    )
