"""Inference throughput: napari-unet's overlap-tile prediction against MONAI.

Both run the *same* network with the *same* weights on the same image, in
the same process, and the ratio is printed. MONAI's
``sliding_window_inference`` needs a network whose output is as large as its
input, so the comparison uses ``same`` padding; ``valid`` (the paper's
geometry) is timed for napari-unet alone. The seam error is the largest
difference of each tiled result against one whole-image pass (where that fits).

On the CPU, napari-unet is timed with both of its engines, PyTorch and
OpenVINO (a default dependency on x86-64 Linux and Windows; what
``engine="auto"`` switches to once a network has done enough work; its
one-time conversion is timed separately and left out of the throughput), in
float32 and, where the processor has bfloat16 units (AMX, AVX512-BF16), in
mixed precision; "default" is what ``InferenceOptions()`` does. MONAI runs
the PyTorch network, in float32 and under the same CPU autocast. The
processor's name and units are printed first: compare ratios, not Mpx/s,
between machines.

Usage (repository root; MONAI is a benchmark-only extra)::

    pip install monai
    PYTHONPATH=src python benchmarks/inference.py --device cpu --sizes 512 2048 4096 --networks default
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


def breakdown(image: np.ndarray, model, device: torch.device, amp: bool, tile: int | None, cache: EngineCache) -> str:
    """Where our time goes on one image (PyTorch): statistics, network on the tile grid, copy to the host."""
    from napari_unet.core.inference.device import auto_batch_size, auto_tile_size, compute_dtype
    from napari_unet.core.inference.predict import cpu_tile_shape
    from napari_unet.core.inference.tiling import tile_grid
    from napari_unet.core.network.folding import folded_copy

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
    if tile is None and device.type == "cpu":
        # the tiles predict_plane_job cuts for PyTorch with this cache's measured speed
        shape = cpu_tile_shape(
            image.shape, config, device, engine="torch", precision=compute_dtype(device, amp=amp), cache=cache
        )
    else:
        side = tile or auto_tile_size(config, device)
        shape = (side, side)
    grid = tile_grid(image.shape, config, tile_shape=shape)
    in_h, in_w = grid.input_shape
    batch = min(len(grid.tiles), auto_batch_size(config, device, in_h * in_w))
    net = folded_copy(model.network.to(device).eval())
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


def processor() -> str:
    """The processor's name and the vector/matrix units that decide the engines' speed."""
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name}; {' '.join(f for f in wanted if f in flags) or 'flags unknown'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--networks", nargs="+", default=["default"], choices=sorted(NETWORKS))
    parser.add_argument("--tile", type=int, default=None, help="our tile side (default: chosen for the engine)")
    parser.add_argument("--monai-rois", type=int, nargs="+", default=[256, 512], help="MONAI window sides tried")
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
    from napari_unet.core.inference.device import compute_dtype
    from napari_unet.core.inference.engine import openvino_available

    half = compute_dtype(device, amp=True)
    has_half = half != torch.float32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # for both: fastest algorithms for repeated shapes
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, channels-last")
    else:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {processor()}")
    print(
        f"mixed precision here: {str(half).removeprefix('torch.')}"
        + ("" if has_half else " (none: this device has no fast half precision)")
    )
    engines = args.engines or (["torch", "openvino"] if device.type == "cpu" and openvino_available() else ["torch"])
    # our variants: (column, engine, amp); "default" is what InferenceOptions() does (engine auto, amp on)
    variants = [(f"{e} f32", e, False) for e in engines]
    short = {torch.bfloat16: "bf16", torch.float16: "f16"}.get(half, "f32")
    if has_half:
        variants += [(f"{e} {short}", e, True) for e in engines]
    variants.append(("default", "auto", True))
    monai_variants = [("f32", False)] + ([(short, True)] if has_half else [])
    rng = np.random.default_rng(0)
    header = "".join(f" {v[0]:>13}" for v in variants) + "".join(f" {'MONAI ' + m[0]:>14}" for m in monai_variants)
    print(
        "Mpx/s of image; ratios against MONAI in float32 (its best window and batch); seams are the largest\n"
        "difference from one whole-image pass in the same precision; 'precision change' is the whole-image\n"
        "pass in mixed precision against float32"
    )
    print(
        f"{'network':8} {'size':>5}{header} {'default/MONAI':>13} {'best/MONAI':>10} {'MONAI f32 roi,b':>15} "
        f"{'seam f32':>8} {'seam amp':>8} {'precision change':>16} {'MONAI seam':>10}"
    )
    for name in args.networks:
        same = build(name, "same")
        flops = conv_flops_per_pixel(same.network)
        bare_side = 2048 if device.type == "cuda" else 512
        bare = bare_network(same, device, bare_side, device.type == "cuda", args.repeats)
        limit = args.peak_tflops * 1e12 / flops / 1e6
        print(
            f"# {name}: {sum(p.numel() for p in same.network.parameters()):,} parameters, "
            f"{flops / 1e6:.2f} MFLOP per pixel; bare network (float32, unfolded) on one {bare_side}^2 input "
            f"{bare:.1f} Mpx/s"
            + (
                f"; compute limit at {args.peak_tflops:.0f} TFLOP/s: {limit:.0f} Mpx/s" if device.type == "cuda" else ""
            ),
            flush=True,
        )
        # one engine cache per variant, as a viewer session or a command run has: converted once, kept,
        # its tile size chosen from the speed it measured
        caches = {v[0]: EngineCache() for v in variants}

        def ours(image: np.ndarray, net: Any, cache: EngineCache, **options: Any) -> np.ndarray:
            settings = InferenceOptions(device=str(device), engine_cache=cache, diameter="model", **options)
            return segment(image, net, output_kind="probabilities", options=settings).probabilities

        for column, engine, amp in variants:
            t0 = time.perf_counter()
            # warm each cache with 4 Mpx of work: "auto" converts for OpenVINO after that much
            warm = np.zeros((2048, 2048), np.float32)
            ours(warm, same, caches[column], engine=engine, amp=amp)
            if engine == "openvino":
                print(
                    f"# {name}: converting for OpenVINO ({column}) and a first 2048^2 pass took "
                    f"{time.perf_counter() - t0:.2f} s",
                    flush=True,
                )
        for size in args.sizes:
            image = rng.normal(100, 20, (size, size)).astype(np.float32)
            mpx = size * size / 1e6
            ours_t = {}
            for column, engine, amp in variants:
                ours_t[column], _ = timed(
                    lambda cache=caches[column], e=engine, a=amp, image=image, same=same: ours(
                        image, same, cache, tile_size=args.tile, engine=e, amp=a
                    ),
                    repeats=args.repeats,
                    device=device,
                )
            monai_t: dict[str, tuple[float, np.ndarray, str]] = {}
            for label, amp in monai_variants:
                for roi in sorted({min(r, size) for r in args.monai_rois}):
                    for batch in args.monai_batches:
                        t, out = timed(
                            lambda b=batch, r=roi, a=amp, image=image, same=same: monai_predict(
                                image, same, device, r, b, a
                            ),
                            repeats=args.repeats,
                            device=device,
                        )
                        if label not in monai_t or t < monai_t[label][0]:
                            monai_t[label] = (t, out, f"{roi},{batch}")
            same.network.to(memory_format=torch.contiguous_format)
            seam32 = seam_half = change = seam_monai = float("nan")
            if size <= args.whole_limit:
                # seams in one precision: the tiling itself, not rounding differences between precisions
                tf32 = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
                whole32 = ours(image, same, EngineCache(), amp=False, tile_size=size + 512, engine=engines[-1])
                tiled32 = ours(
                    image, same, caches[f"{engines[-1]} f32"], amp=False, tile_size=args.tile, engine=engines[-1]
                )
                seam32 = float(np.abs(tiled32 - whole32).max())
                seam_monai = float(np.abs(monai_t["f32"][1] - whole32).max())
                if has_half:
                    whole_half = ours(image, same, EngineCache(), amp=True, tile_size=size + 512, engine=engines[-1])
                    column = next(v[0] for v in variants if v[1] == engines[-1] and v[2])
                    tiled_half = ours(image, same, caches[column], amp=True, tile_size=args.tile, engine=engines[-1])
                    seam_half = float(np.abs(tiled_half - whole_half).max())
                    change = float(np.abs(whole_half - whole32).max())
                torch.backends.cudnn.allow_tf32 = tf32
            if size == max(args.sizes):
                first = variants[0][0]
                print(
                    f"# {name} {size}: ours ({first}) {ours_t[first] * 1e3:.0f} ms = "
                    + breakdown(image, same, device, False, args.tile, caches[first])
                )
            reference = monai_t["f32"][0]
            best = min(ours_t.values())
            speeds = "".join(f" {mpx / ours_t[v[0]]:13.2f}" for v in variants)
            speeds += "".join(f" {mpx / monai_t[m[0]][0]:14.2f}" for m in monai_variants)
            print(
                f"{name:8} {size:5d}{speeds} {reference / ours_t['default']:13.2f} {reference / best:10.2f} "
                f"{monai_t['f32'][2]:>15} {seam32:8.1e} {seam_half:8.1e} {change:16.1e} {seam_monai:10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
