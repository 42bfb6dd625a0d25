"""Inference throughput: napari-unet's overlap-tile prediction against MONAI.

Both run the *same* network with the *same* weights on the same image, in
the same process, and the ratio is printed. MONAI's
``sliding_window_inference`` needs a network whose output is as large as its
input, so the comparison uses ``same`` padding; ``valid`` (the paper's
geometry) is timed for napari-unet alone. The seam error is the largest
difference of each tiled result against one whole-image pass (where that fits).

On the CPU, napari-unet is timed with both of its engines: PyTorch and, when
the ``openvino`` extra is installed, OpenVINO (what ``engine="auto"`` switches
to once a network has done enough work; its one-time conversion is timed
separately and left out of the throughput). MONAI runs the PyTorch network.

Usage (repository root; MONAI is a benchmark-only extra)::

    pip install monai openvino
    PYTHONPATH=src python benchmarks/inference.py --device cpu --sizes 512 2048 --networks default
    PYTHONPATH=src python benchmarks/inference.py --device cuda --sizes 512 2048 4096 --networks paper default
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from napari_unet.core import new_model, segment
from napari_unet.core.inference.device import autocast, resolve_device
from napari_unet.core.inference.engine import EngineCache
from napari_unet.core.inference.options import InferenceOptions
from napari_unet.core.network.registry import load_named_model, shipped_models
from napari_unet.core.network.unet import UNet

NETWORKS = {
    "paper": dict(depth=5, base_features=64),
    "default": None,  # the shipped nuclei model (or its architecture, if absent)
}


def build(name: str, padding: str):
    if name == "default" and any(m.key == "nuclei" for m in shipped_models()):
        model = load_named_model("nuclei")
        if model.config.padding != padding:
            config = replace(model.config, padding=padding)
            net = UNet(config)
            net.load_state_dict(model.network.state_dict())
            model.description.config = config
            model.network = net.eval()
        return model
    arch = NETWORKS[name] or dict(depth=4, base_features=16, norm="batch")
    torch.manual_seed(0)
    return new_model(padding=padding, **arch)


def timed(fn, *, repeats: int, device: torch.device):
    fn()  # warm-up (allocations, cuDNN autotuning)
    best = float("inf")
    out = None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def monai_predict(image: np.ndarray, model, device: torch.device, roi: int, batch: int, amp: bool) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    from napari_unet.core.network.normalization import apply_normalization

    stats = model.description.normalization.statistics(image[..., None])
    x = torch.from_numpy(apply_normalization(image[..., None], stats)).permute(2, 0, 1)[None].to(device)
    # the layout our prediction uses, on every device: it is faster for MONAI too
    net = model.network.to(device).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, enabled=amp):
        logits = sliding_window_inference(
            x, roi_size=(roi, roi), sw_batch_size=batch, predictor=net, overlap=0.25, mode="gaussian"
        )
    return torch.softmax(logits.float(), 1)[0].cpu().numpy()


def conv_flops_per_pixel(net: torch.nn.Module, side: int = 256) -> float:
    """Multiply-adds x 2 of all convolutions per input pixel (counted with hooks)."""
    total = 0.0

    def hook(module, inputs, output):  # type: ignore[no-untyped-def]
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, torch.nn.ConvTranspose2d):
            pixels = inputs[0].shape[-1] * inputs[0].shape[-2]
        else:
            pixels = output.shape[-1] * output.shape[-2]
        total += 2.0 * module.in_channels * module.out_channels * k * pixels / module.groups

    handles = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        net(torch.zeros(1, net.config.in_channels, side, side, device=next(net.parameters()).device))
    for h in handles:
        h.remove()
    net.train(was_training)
    return total / (side * side)


def bare_network(model, device: torch.device, side: int, amp: bool, repeats: int) -> float:
    """Mpx/s of the network alone on one side x side input already on the device (no tiling, no copies)."""
    net = model.network.to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, model.config.in_channels, side, side, device=device).contiguous(
        memory_format=torch.channels_last
    )

    def run():  # type: ignore[no-untyped-def]
        with torch.inference_mode(), autocast(device, enabled=amp):
            return net(x)

    t, _ = timed(run, repeats=repeats, device=device)
    return side * side / 1e6 / t


def breakdown(image: np.ndarray, model, device: torch.device, amp: bool, tile: int | None) -> str:
    """Where our time goes on one image: statistics, network on the tile grid, copy to the host."""
    from napari_unet.core.inference.device import auto_batch_size, auto_tile_size
    from napari_unet.core.inference.tiling import tile_grid

    def clock(fn) -> float:  # type: ignore[no-untyped-def]
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3

    config = model.config
    stats_ms = clock(lambda: model.description.normalization.statistics(image[..., None]))
    side = tile or auto_tile_size(config, device)
    grid = tile_grid(image.shape, config, tile_shape=(side, side))
    in_h, in_w = grid.input_shape
    batch = min(len(grid.tiles), auto_batch_size(config, device, in_h * in_w))
    net = model.network.to(device).eval()
    x = torch.randn(batch, config.in_channels, in_h, in_w, device=device).contiguous(memory_format=torch.channels_last)
    calls = -(-len(grid.tiles) // batch)

    def network() -> None:
        with torch.inference_mode(), autocast(device, enabled=amp):
            for _ in range(calls):
                net(x)

    net_ms = clock(network)
    out = torch.empty((config.n_classes, *image.shape), dtype=torch.float32, device=device)
    host = np.empty((config.n_classes, *image.shape), dtype=np.float32)
    copy_ms = clock(lambda: torch.from_numpy(host).copy_(out))
    computed = calls * batch * in_h * in_w / 1e6
    return (
        f"tiles {len(grid.tiles)} x {in_h}x{in_w} in batches of {batch} ({computed:.1f} Mpx computed for "
        f"{image.size / 1e6:.1f}); statistics {stats_ms:.0f} ms, network {net_ms:.0f} ms, "
        f"probabilities to host {copy_ms:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--networks", nargs="+", default=["default"], choices=sorted(NETWORKS))
    parser.add_argument("--tile", type=int, default=None, help="our tile side (default: chosen from free memory)")
    parser.add_argument("--monai-rois", type=int, nargs="+", default=[512], help="MONAI window sides tried")
    parser.add_argument("--monai-batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--whole-limit", type=int, default=2048, help="largest size for the whole-image reference")
    parser.add_argument(
        "--engines",
        nargs="+",
        default=None,
        choices=["torch", "openvino"],
        help="our engines to time (default: torch, and openvino on the CPU when installed)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=790.0,
        help="the device's dense bf16 rate, for the compute limit (H100: ~790 measured)",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # for both: fastest algorithms for repeated shapes
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, bf16 autocast, channels-last")
    else:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    from napari_unet.core.inference.engine import openvino_available

    engines = args.engines or (["torch", "openvino"] if device.type == "cpu" and openvino_available() else ["torch"])
    rng = np.random.default_rng(0)
    columns = "".join(f" {'ours ' + e:>14}" for e in engines) + "".join(f" {e + '/MONAI':>14}" for e in engines)
    print(
        f"{'network':8} {'size':>5}{columns} {'MONAI Mpx/s':>11} {'MONAI roi,batch':>15} "
        f"{'ours seam':>9} {'MONAI seam':>10} {'valid Mpx/s':>11} {'bare Mpx/s':>10}"
    )
    for name in args.networks:
        same = build(name, "same")
        valid = build(name, "valid")
        flops = conv_flops_per_pixel(same.network)
        bare_side = 2048 if device.type == "cuda" else 512
        bare = bare_network(same, device, bare_side, amp, args.repeats)
        limit = args.peak_tflops * 1e12 / flops / 1e6
        print(
            f"# {name}: {sum(p.numel() for p in same.network.parameters()):,} parameters, "
            f"{flops / 1e6:.2f} MFLOP per pixel; bare network on one {bare_side}^2 input {bare:.1f} Mpx/s"
            + (f"; compute limit at {args.peak_tflops:.0f} TFLOP/s: {limit:.0f} Mpx/s" if amp else ""),
            flush=True,
        )
        # one engine cache per network, as a viewer session or a command run has: converted once, kept
        cache = EngineCache()

        def ours(image: np.ndarray, net: Any, *, cache: EngineCache = cache, **options: Any) -> np.ndarray:
            settings = InferenceOptions(device=str(device), engine_cache=cache, **options)
            return segment(image, net, output_kind="probabilities", options=settings).probabilities

        if "openvino" in engines:
            t0 = time.perf_counter()
            ours(np.zeros((64, 64), np.float32), same, engine="openvino")
            print(
                f"# {name}: converting it for OpenVINO (once per network and weights) took "
                f"{time.perf_counter() - t0:.2f} s",
                flush=True,
            )
        for size in args.sizes:
            image = rng.normal(100, 20, (size, size)).astype(np.float32)
            mpx = size * size / 1e6
            ours_t = {}
            for engine in engines:
                ours_t[engine], _ = timed(
                    lambda e=engine, image=image, same=same: ours(image, same, tile_size=args.tile, engine=e),
                    repeats=args.repeats,
                    device=device,
                )
            best_monai = None
            for roi in sorted({min(r, size) for r in args.monai_rois}):
                for batch in args.monai_batches:
                    t, out = timed(
                        lambda b=batch, r=roi, image=image, same=same: monai_predict(image, same, device, r, b, amp),
                        repeats=args.repeats,
                        device=device,
                    )
                    if best_monai is None or t < best_monai[0]:
                        best_monai = (t, out, f"{roi},{batch}")
            monai_t, monai_out, monai_setting = best_monai
            same.network.to(memory_format=torch.contiguous_format)
            valid_t, _ = timed(
                lambda image=image, valid=valid: ours(image, valid, tile_size=args.tile),
                repeats=1,
                device=device,
            )
            seam_ours = seam_monai = float("nan")
            if size <= args.whole_limit:
                # in float32 (TF32 off): bf16 rounding differs between tile shapes and would hide
                # what the tiling itself does
                tf32 = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
                whole = ours(image, same, amp=False, tile_size=size + 512, engine=engines[-1])
                tiled = ours(image, same, amp=False, tile_size=args.tile, engine=engines[-1])
                torch.backends.cudnn.allow_tf32 = tf32
                seam_ours = float(np.abs(tiled - whole).max())
                seam_monai = float(np.abs(monai_out - whole).max())
            if size == max(args.sizes):
                print(
                    f"# {name} {size}: ours ({engines[0]}) {ours_t[engines[0]] * 1e3:.0f} ms = "
                    + breakdown(image, same, device, amp, args.tile)
                )
            speeds = "".join(f" {mpx / ours_t[e]:14.2f}" for e in engines)
            ratios = "".join(f" {monai_t / ours_t[e]:14.2f}" for e in engines)
            print(
                f"{name:8} {size:5d}{speeds}{ratios} {mpx / monai_t:11.2f} {monai_setting:>15} "
                f"{seam_ours:9.2e} {seam_monai:10.2e} {mpx / valid_t:11.2f} {bare:10.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
