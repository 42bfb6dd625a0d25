"""What a bioimage.io package says in words: the normalisation, the instance rule, the documentation page."""

from __future__ import annotations

from collections.abc import Sequence

from napari_unet.core.network.instances import InstanceRule
from napari_unet.core.network.model_file import ModelDescription
from napari_unet.core.network.normalization import Normalization

__all__ = ["documentation", "instance_rule_text", "normalization_text"]


def normalization_text(norm: Normalization, /) -> str:
    """The normalisation napari-unet applies, and how exactly the package's pre-processing reproduces it."""
    if norm.kind == "percentile":
        rule = (
            f"the {norm.low:g}th and {norm.high:g}th percentiles of each channel of each image are mapped to 0 and 1 "
            "(`(x - p_low) / (p_high - p_low)`). The package's `scale_range` pre-processing does the same; it adds "
            "1e-6 to the denominator, and napari-unet reads at most 2 million regularly spaced pixels of very large "
            "planes to estimate the percentiles, so results on huge images can differ very slightly"
        )
    elif norm.kind == "range":
        rule = (
            f"the fixed intensities {norm.low:g} and {norm.high:g} are mapped to 0 and 1 "
            f"(`(x - {norm.low:g}) / {norm.high - norm.low:g}`); the package's `scale_linear` pre-processing is the same"
        )
    else:
        rule = (
            "each channel of each image has its mean subtracted and is divided by its standard deviation. The "
            "package's `zero_mean_unit_variance` pre-processing is approximately the same: it adds 1e-6 to the "
            "standard deviation, and napari-unet divides a constant image by 1 instead"
        )
    return (
        f"Input normalisation: {rule}. napari-unet sets pixels that are not finite (NaN, Inf) to 0 after "
        "normalising; the bioimage.io pre-processing does not."
    )


def _names(classes: Sequence[int], class_names: Sequence[str]) -> str:
    return ", ".join(f"{c} ({class_names[c]})" for c in classes)


def instance_rule_text(rule: InstanceRule, class_names: Sequence[str], /) -> str:
    """napari-unet's rule from class probabilities to separate objects, in words a user of another tool can follow."""
    if rule.method == "none":
        return "Objects: this model has no instance rule; use the most probable class per pixel."
    foreground = _names(rule.foreground_classes, class_names)
    if rule.foreground_threshold is None:
        foreground_pixels = f"the pixels whose most probable class is one of {foreground}"
    else:
        foreground_pixels = (
            f"the pixels where the summed probability of {foreground} exceeds {rule.foreground_threshold:g}"
        )
    small = f" Objects smaller than {rule.min_size} pixels are dropped." if rule.min_size else ""
    if rule.method == "components":
        return (
            "Objects (instance post-processing, not part of the package's network): "
            f"{foreground_pixels} are foreground; each 4-connected component of the foreground is one "
            f"object.{small} Objects are numbered 1..N, 0 is background."
        )
    seeds = _names(rule.seed_classes, class_names)
    if rule.seed_threshold is None:
        seed_pixels = f"the pixels whose most probable class is one of {seeds}"
    else:
        seed_pixels = f"the pixels where the summed probability of {seeds} exceeds {rule.seed_threshold:g}"
    seed_small = f" seeds smaller than {rule.min_size} pixels are dropped;" if rule.min_size else ""
    return (
        "Objects (instance post-processing, not part of the package's network): seeded watershed. Seeds are the "
        f"4-connected regions of {seed_pixels};{seed_small} each seed grows by watershed on minus the summed "
        f"probability of {foreground}, over {foreground_pixels}. Foreground "
        f"without a seed is not an object.{small} Objects are numbered 1..N, 0 is background."
    )


def _number(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def documentation(desc: ModelDescription, /, *, halo: int, min_size: int, step: int) -> str:
    """The package's README.md: what the model is, its input and output, normalisation, objects, validation."""
    config = desc.config
    pixel = f"{desc.pixel_size_um:g} µm" if desc.pixel_size_um else "not recorded"
    runs = [entry for entry in desc.training_history if isinstance(entry, dict) and entry.get("metric_name")]
    validation = (
        f"The last training run of this model ({runs[-1].get('kind', 'training')}) scored "
        f"{runs[-1]['metric_name']} = {_number(runs[-1].get('best_metric'))} on its held-back validation images"
        + (
            f" (before: {_number(runs[-1]['baseline_metric'])})."
            if runs[-1].get("baseline_metric") is not None
            else "."
        )
        if runs
        else "This model's file records no validation metric."
    )
    return f"""# {desc.name}

{desc.description or "A U-Net segmentation model made with napari-unet."}

Exported with napari-unet: the U-Net of Ronneberger, Fischer and Brox (2015),
`{config.padding}` padding, depth {config.depth}, {config.base_features} base features, normalisation layers:
`{config.norm}`.

## Input

One image, channels {list(desc.channel_names)}, axes batch, channel, y, x, float32. Sizes: {min_size} + n * {step}
pixels along y and x. Pixel size of the training data: {pixel}.

{normalization_text(desc.normalization)}

## Output

Class probabilities (softmax over the classes, summing to 1 per pixel), channels {list(desc.class_names)}.
{"The output is smaller than the input by " + str(halo) + " pixels on each side (unpadded convolutions)." if config.padding == "valid" else f"Tiles should overlap: discard {halo} pixels at each tile edge (the halo)."}
The most probable class per pixel gives the semantic segmentation.

{instance_rule_text(desc.instance_rule, desc.class_names)}

## Use in napari-unet

`napari-unet segment IMAGE.tif --model THIS_PACKAGE.zip -o labels.tif`, or *Load model file...* in the Segment
widget: the package is read back to the same napari-unet model (its description is stored under `config.napari_unet`).

## Validation

{validation} Check the model on annotated images of your own before you rely on it (for instance with napari-unet's
Fine-tune widget, which reports F1@0.5 on a held-back part of your annotation).
"""
