"""Peak memory of segmenting a large image block by block into zarr, against loading it whole.

Every run happens in a fresh process that reports its own peak resident
memory (``ru_maxrss``), so the figures do not leak into each other. Inputs
are zarr arrays on disk: a mosaic of the bundled crowded-nuclei sample, of
the side asked for, written chunk by chunk (the mosaic itself never sits in
memory).

Two comparisons, printed as ratios measured in the same run:

1. ``--sizes`` (default 2048 4096): the peer is the in-memory path,
   :func:`napari_unet.core.segment` on the whole image (what the napari
   widget does for an ordinary layer), against
   :func:`napari_unet.core.blockwise.to_zarr.segment_to_zarr` on the same zarr
   input, both with the real model (``--model``). The in-memory peak grows
   with the image; the blockwise one should not.
2. ``--large`` (default 20000): blockwise only, on a ``large x large`` image.
   On a CPU the real network would take hours at this size, so by default
   this run keeps the model's description (normalisation, instance rule,
   classes) but swaps its network for a pointwise stand-in
   (``--large-network threshold``); everything else (lazy reading, blocks,
   joining objects, zarr writing, pyramid) is the real code. Network memory
   is per tile and bounded by ``--tile-size``; comparison 1 measures it with
   the real network. ``--large-network real`` runs the real network (use it
   on a GPU).

Usage (repository root)::

    PYTHONPATH=src python benchmarks/large_image.py
    PYTHONPATH=src python benchmarks/large_image.py --sizes 2048 --large 8000
    PYTHONPATH=src python benchmarks/large_image.py --device cuda --large-network real
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 512


def make_mosaic(path: Path, side: int) -> None:
    """A ``side x side`` uint8 zarr mosaic of the crowded-nuclei sample, written chunk by chunk."""
    import numpy as np
    import tifffile
    import zarr

    import napari_unet

    tile = tifffile.imread(Path(napari_unet.__file__).parent / "sample_data" / "nuclei_crowded.tif")
    th, tw = tile.shape
    array = zarr.create_array(str(path), shape=(side, side), chunks=(CHUNK, CHUNK), dtype=np.uint8)
    ys, xs = np.arange(CHUNK), np.arange(CHUNK)
    for y0 in range(0, side, CHUNK):
        for x0 in range(0, side, CHUNK):
            h, w = min(CHUNK, side - y0), min(CHUNK, side - x0)
            array[y0 : y0 + h, x0 : x0 + w] = tile[np.ix_((y0 + ys[:h]) % th, (x0 + xs[:w]) % tw)]


def child(args: argparse.Namespace) -> None:
    """One measured run; prints a JSON line with its figures."""
    import resource

    import numpy as np

    from napari_unet.core import load_named_model, segment
    from napari_unet.core.blockwise.to_zarr import segment_to_zarr
    from napari_unet.core.io.ome_zarr import LazyImage

    model = load_named_model(args.model)
    if args.network == "threshold":
        model = _with_threshold_network(model)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if args.mode == "in-memory":
        image = np.asarray(LazyImage(args.input)[...])
        result = segment(image, model, device=args.device, tile_size=args.tile_size)
        n_objects = result.n_objects
    else:
        result = segment_to_zarr(
            LazyImage(args.input),
            model,
            args.output,
            device=args.device,
            block_size=args.block_size,
            margin=args.margin,
            tile_size=args.tile_size,
        )
        n_objects = result.n_objects
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"peak_mib": peak / 1024, "baseline_mib": baseline / 1024, "seconds": seconds, "objects": n_objects})
    )


def _with_threshold_network(model):  # type: ignore[no-untyped-def]
    """The model's description with a pointwise network: class 1 where the normalised input is above 0.5."""
    import torch
    from torch import nn

    from napari_unet.core import SegmentationModel

    class Threshold(nn.Module):
        def __init__(self, n_classes: int) -> None:
            super().__init__()
            self.n_classes = n_classes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (x[:, :1] - 0.5) * 20
            return torch.cat([-s, s] + [torch.full_like(s, -50.0)] * (self.n_classes - 2), dim=1)

    description = model.description
    if description.config.padding != "same":
        raise SystemExit("the threshold stand-in needs a 'same'-padded model")
    return SegmentationModel(description, Threshold(description.config.n_classes))


def run_child(mode: str, input_path: Path, output: Path, args: argparse.Namespace, network: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--mode",
        mode,
        "--input",
        str(input_path),
        "--output",
        str(output),
        "--model",
        args.model,
        "--device",
        args.device,
        "--block-size",
        str(args.block_size),
        "--margin",
        str(args.margin),
        "--network",
        network,
    ]
    if args.tile_size:
        command += ["--tile-size", str(args.tile_size)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096])
    parser.add_argument("--large", type=int, default=20000, help="side of the blockwise-only image (0: skip)")
    parser.add_argument("--large-network", choices=["threshold", "real"], default="threshold")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--margin", type=int, default=128)
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--folder", default=None, help="where to write inputs and outputs (default: a temp folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--network", default="real", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        print(
            f"model {args.model}, device {args.device}, block {args.block_size}, margin {args.margin}, "
            f"{os.cpu_count()} CPUs"
        )
        print(f"{'image':>13} {'path':<10} {'network':<9} {'peak MiB':>9} {'seconds':>8} {'objects':>8}")
        for side in args.sizes:
            source = folder / f"mosaic{side}.zarr"
            make_mosaic(source, side)
            rows = {}
            for mode in ("in-memory", "blockwise"):
                rows[mode] = run_child(mode, source, folder / f"out{side}-{mode}.zarr", args, "real")
                _print_row(side, mode, "real", rows[mode])
            if "error" not in rows["in-memory"] and "error" not in rows["blockwise"]:
                print(
                    f"{'':>13} peak memory blockwise / in-memory: "
                    f"{rows['blockwise']['peak_mib'] / rows['in-memory']['peak_mib']:.2f}"
                )
        if args.large:
            source = folder / f"mosaic{args.large}.zarr"
            t0 = time.perf_counter()
            make_mosaic(source, args.large)
            print(f"(wrote the {args.large} x {args.large} input in {time.perf_counter() - t0:.0f} s)")
            row = run_child("blockwise", source, folder / "large.zarr", args, args.large_network)
            _print_row(args.large, "blockwise", args.large_network, row)
            if "error" not in row:
                pixels = args.large**2
                print(
                    f"{'':>13} image {pixels / 2**20:.0f} MiB as uint8; its labels {pixels * 4 / 2**20:.0f} MiB "
                    f"as uint32; peak / labels size: {row['peak_mib'] / (pixels * 4 / 2**20):.2f}"
                )


def _print_row(side: int, mode: str, network: str, row: dict) -> None:
    if "error" in row:
        print(f"{side:>6} x {side:<6}{mode:<10} {network:<9} failed: {row['error']}")
        return
    print(
        f"{side:>6} x {side:<6}{mode:<10} {network:<9} {row['peak_mib']:>9.0f} {row['seconds']:>8.1f} "
        f"{row['objects']:>8}"
    )


if __name__ == "__main__":
    main()
