"""Forward speed (ms per 256² tile, batch 8) and parameter counts of the network configs.

    python benchmarks/model_speed.py [--threads 2] [--repeats 5]

Runs fp32 and, where the CPU supports it, bf16 autocast + channels_last (the inference path
of wsi_pipeline.model.predict). Prints one table row per config and precision.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from wsi_pipeline.infer_config import DEFAULT_TILE_SIZE
from wsi_pipeline.model import MultiTaskNet
from wsi_pipeline.model.predict import autocast_dtype

CONFIGS = {
    "default (resnet34, width 64)": {"encoder": "resnet34", "width": 64},
    "compact (resnet34, width 32)": {"encoder": "resnet34", "width": 32},
    "tiny (resnet18, width 16)": {"encoder": "resnet18", "width": 16},
}


def time_forward(net: MultiTaskNet, batch: torch.Tensor, amp: torch.dtype | None, repeats: int) -> float:
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        net(batch)  # warm-up: oneDNN picks kernels on the first call
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(batch)
            times.append(time.perf_counter() - t0)
    return min(times) / batch.shape[0] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    amp = autocast_dtype(torch.device("cpu"))
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| config | params total (M) | params per encoder (M) | fp32 ms/tile "
          "| bf16+channels_last ms/tile |")
    print("|---|---|---|---|---|")
    for name, kw in CONFIGS.items():
        net = MultiTaskNet(**kw).eval()
        total = sum(p.numel() for p in net.parameters()) / 1e6
        enc = sum(p.numel() for p in net.encoders["ns"].parameters()) / 1e6
        x = torch.rand(args.batch, 3, DEFAULT_TILE_SIZE, DEFAULT_TILE_SIZE)
        fp32 = time_forward(net, x, None, args.repeats)
        bf16 = "n/a"
        if amp is not None:
            net_cl = net.to(memory_format=torch.channels_last)  # outside inference_mode
            x_cl = x.contiguous(memory_format=torch.channels_last)
            bf16 = f"{time_forward(net_cl, x_cl, amp, args.repeats):.1f}"
        print(f"| {name} | {total:.1f} | {enc:.2f} | {fp32:.1f} | {bf16} |", flush=True)


if __name__ == "__main__":
    main()
