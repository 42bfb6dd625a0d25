"""Inference throughput: napari-unet's overlap-tile prediction against MONAI.

Both run the *same* network with the *same* weights on the same image, in
the same process, and the ratio is printed. MONAI's
``sliding_window_inference`` needs a network whose output is as large as its
input, so the comparison uses ``same`` padding; ``valid`` (the paper's
geometry) is timed for napari-unet alone. The seam error is the largest
difference of each tiled result against one whole-image pass (where that fits).

Usage (repository root; MONAI is a benchmark-only extra)::

    pip install monai
    PYTHONPATH=src python benchmarks/inference.py --device cpu --sizes 512 2048 --networks default
    PYTHONPATH=src python benchmarks/inference.py --device cuda --sizes 512 2048 4096 --networks paper default
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from napari_unet.core import new_model, segment
from napari_unet.core.device import autocast, resolve_device
from napari_unet.core.model import UNet
from napari_unet.core.registry import shipped_models, load_named_model

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

    from napari_unet.core.normalization import apply_normalization

    stats = model.description.normalization.statistics(image[..., None])
    x = torch.from_numpy(apply_normalization(image[..., None], stats)).permute(2, 0, 1)[None].to(device)
    net = model.network.to(device).eval()
    with torch.inference_mode(), autocast(device, enabled=amp):
        logits = sliding_window_inference(x, roi_size=(roi, roi), sw_batch_size=batch, predictor=net,
                                          overlap=0.25, mode="gaussian")
    return torch.softmax(logits.float(), 1)[0].cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--networks", nargs="+", default=["default"], choices=sorted(NETWORKS))
    parser.add_argument("--tile", type=int, default=None, help="tile side for both (default: ours auto, MONAI 512)")
    parser.add_argument("--monai-batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--whole-limit", type=int, default=2048, help="largest size for the whole-image reference")
    args = parser.parse_args()
    device = resolve_device(args.device)
    amp = device.type == "cuda"
    if device.type == "cpu":
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    else:
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}")
    rng = np.random.default_rng(0)
    print(f"{'network':8} {'size':>5} {'ours Mpx/s':>10} {'MONAI Mpx/s':>11} {'ratio':>6} "
          f"{'ours seam':>9} {'MONAI seam':>10} {'valid Mpx/s':>11}")
    for name in args.networks:
        same = build(name, "same")
        valid = build(name, "valid")
        for size in args.sizes:
            image = rng.normal(100, 20, (size, size)).astype(np.float32)
            mpx = size * size / 1e6
            ours_t, ours = timed(lambda: segment(image, same, output="probabilities", device=str(device),
                                                 tile_size=args.tile).probabilities,
                                 repeats=args.repeats, device=device)
            roi = args.tile or 512
            best_monai = None
            for batch in args.monai_batches:
                t, out = timed(lambda b=batch: monai_predict(image, same, device, min(roi, size), b, amp),
                               repeats=args.repeats, device=device)
                if best_monai is None or t < best_monai[0]:
                    best_monai = (t, out)
            monai_t, monai_out = best_monai
            valid_t, _ = timed(lambda: segment(image, valid, output="probabilities", device=str(device),
                                               tile_size=args.tile).probabilities,
                               repeats=1, device=device)
            seam_ours = seam_monai = float("nan")
            if size <= args.whole_limit:
                whole = segment(image, same, output="probabilities", device=str(device),
                                tile_size=size + 512).probabilities
                seam_ours = float(np.abs(ours - whole).max())
                seam_monai = float(np.abs(monai_out - whole).max())
            print(f"{name:8} {size:5d} {mpx / ours_t:10.2f} {mpx / monai_t:11.2f} {monai_t / ours_t:6.2f} "
                  f"{seam_ours:9.2e} {seam_monai:10.2e} {mpx / valid_t:11.2f}", flush=True)


if __name__ == "__main__":
    main()
