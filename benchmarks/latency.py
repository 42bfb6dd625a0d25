"""Latency from "Segment" to labels for one 512 x 512 image, cold and warm.

Run it in a fresh process: "cold" is the first call after the model file is
loaded (CUDA context, cuDNN autotuning and allocator warm-up included), "warm"
the median of the calls after it. ``--engine openvino`` converts the network
first (timed on its own line): the warm figure a CPU user reaches once
``auto`` has switched to OpenVINO. The image is the bundled nuclei sample
padded or cropped to the size asked for.

Usage (repository root)::

    PYTHONPATH=src python benchmarks/latency.py --device cpu
    PYTHONPATH=src python benchmarks/latency.py --device cpu --engine openvino
    PYTHONPATH=src python benchmarks/latency.py --device cpu --engine torch --float32
    PYTHONPATH=src python benchmarks/latency.py --device cuda --model nuclei
"""

from __future__ import annotations

import argparse
import statistics
import time

started = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from napari_unet._sample_data import nuclei_sample  # noqa: E402
from napari_unet.core import load_named_model, segment  # noqa: E402
from napari_unet.core.inference.device import compute_dtype, resolve_device  # noqa: E402
from napari_unet.core.inference.engine import EngineCache  # noqa: E402
from napari_unet.core.inference.options import InferenceOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "openvino"])
    parser.add_argument(
        "--float32", action="store_true", help="no mixed precision (the default uses it where it is fast)"
    )
    args = parser.parse_args()
    imported = time.perf_counter() - started
    t0 = time.perf_counter()
    model = load_named_model(args.model)
    loaded = time.perf_counter() - t0
    image = np.asarray(nuclei_sample()[0][0])
    image = np.pad(
        image, [(0, max(0, args.size - image.shape[0])), (0, max(0, args.size - image.shape[1]))], mode="reflect"
    )[: args.size, : args.size]

    # one engine cache for the run, as a viewer session or a command has: the conversion is kept
    options = InferenceOptions(device=args.device, engine=args.engine, amp=not args.float32, engine_cache=EngineCache())

    def once() -> tuple[float, int]:
        t = time.perf_counter()
        result = segment(image, model, output_kind="instances", options=options)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t, result.n_objects

    if args.engine == "openvino":
        t = time.perf_counter()
        segment(image[:64, :64], model, output_kind="instances", options=options)
        print(f"converting the network for OpenVINO {time.perf_counter() - t:.2f} s (once per model)")
    cold, n = once()
    warm = [once()[0] for _ in range(args.warm_runs)]
    print(
        f"device {args.device}, engine {args.engine}, {compute_dtype(resolve_device(args.device), amp=not args.float32)}, "
        f"model {args.model}, image {image.shape[0]} x {image.shape[1]}, {n} objects"
    )
    print(f"import {imported:.2f} s, model load {loaded:.3f} s")
    print(
        f"cold (first call) {cold:.3f} s; warm median {statistics.median(warm):.3f} s "
        f"(min {min(warm):.3f}, max {max(warm):.3f}, {len(warm)} runs)"
    )


if __name__ == "__main__":
    main()
