"""Network speed on the exact path the engine uses, against this CPU's measured peak.

    python benchmarks/model_speed.py [--threads 2] [--shapes 256x16 256x4 576x2] [--configs]

For each tile side × batch size: the shipped network prepared as `infer_slide` prepares it
(`model.predictors.load_predictor`) and run through `predict_batch_compact` (uint8 in, maps.zarr
storage types out), by each back end: OpenVINO (the default on CPUs where it is installed; and its
int8 network where the checkpoint has one, `model.quantize`) and
PyTorch (BatchNorm folded, bf16 weights where the CPU has native bf16), beside the previous path
(unfolded network under bf16 autocast; fp32 where there is no native bf16) and PyTorch in fp32.
Columns: ms per tile, ms per megapixel of *output* (the tile's central
crop with inference's margin, so tile sizes compare as the slide pays for them), GFLOP per tile
(torch.utils.flop_counter: convolutions and matmuls) and the GFLOP/s achieved. The peak rows
time a 4096² matmul and a 3×3 256-channel convolution (channels_last) in fp32 and, where native,
bf16, on the same threads. The header records the CPU model and the flags that decide precision.
--configs adds the parameter/speed table of the three network sizes (random weights, 256²).
Where onnxruntime and onnx are installed (not dependencies of the package), a row for ONNX Runtime's
CPU execution provider in fp32, through the same `predict_batch_compact`: measured to compare it
with OpenVINO, not an engine back end.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from wsi_pipeline.inference.config import DEFAULT_MARGIN, DEFAULT_TILE_SIZE
from wsi_pipeline.model import MultiTaskNet, load_checkpoint
from wsi_pipeline.model.checkpoint import default_checkpoint_path
from wsi_pipeline.model.fold import fold_batchnorm
from wsi_pipeline.model.openvino_net import openvino_available
from wsi_pipeline.model.predict import autocast_dtype, cpu_flags, predict_batch_compact
from wsi_pipeline.model.predictors import bare_model, load_predictor
from wsi_pipeline.model.quantize import int8_model_path
from wsi_pipeline.model.runtime import choose_runtime

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
CONFIGS = {
    "default (resnet34, width 64)": {"encoder": "resnet34", "width": 64},
    "compact (resnet34, width 32)": {"encoder": "resnet34", "width": 32},
    "tiny (resnet18, width 16)": {"encoder": "resnet18", "width": 16},
}


def cpu_header(threads: int) -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    flags = " ".join(f for f in FLAGS if f in cpu_flags()) or "none of " + " ".join(FLAGS)
    return (f"# {model}; flags: {flags}; {threads} torch threads; torch {torch.__version__}; "
            f"auto precision: {autocast_dtype(torch.device('cpu')) or 'fp32'}")


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call of a shape
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_rows(repeats: int) -> list[str]:
    """Measured GFLOP/s of a big matmul and a 3x3 conv: what this CPU can do on these threads."""
    dtypes = [torch.float32] + ([torch.bfloat16] if autocast_dtype(torch.device("cpu")) else [])
    rows = []
    for dtype in dtypes:
        a = torch.rand(4096, 4096, dtype=dtype)
        s = best_seconds(lambda a=a: a @ a, repeats)
        rows.append(f"| peak: matmul 4096² {str(dtype)[6:]} | {2 * 4096**3 / s / 1e9:.0f} GFLOP/s |")
        conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(dtype).to(
            memory_format=torch.channels_last)
        x = torch.rand(8, 256, 64, 64, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            s = best_seconds(lambda conv=conv, x=x: conv(x), repeats)
        rows.append(f"| peak: conv 3×3 256→256, 8×64² {str(dtype)[6:]} "
                    f"| {2 * 8 * 64 * 64 * 256 * 256 * 9 / s / 1e9:.0f} GFLOP/s |")
    return rows


def forward_flops(net: torch.nn.Module, tile: int) -> float:
    """FLOPs of one tile's forward pass (fp32 copy of the network, unfolded: folding removes
    only BatchNorm, which the counter does not count)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 3, tile, tile))
    return float(counter.get_total_flops())


def previous_path(net: torch.nn.Module, tiles: np.ndarray, dtype: torch.dtype | None) -> None:
    """The engine's forward before BatchNorm folding: the training network under autocast."""
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div_(255.0)
    if dtype is not None:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)
    with torch.inference_mode(), amp:
        net(x)


def _eye_as_comparison(n: int, dtype: torch.dtype | None = None, device: object = None) -> torch.Tensor:
    """torch.eye as arange == arange: ONNX Runtime has no kernel for a boolean EyeLike, which
    the criss-cross attention's self-mask exports to."""
    r = torch.arange(n, device=device)
    return (r[:, None] == r[None, :]).to(dtype or torch.float32)


class OnnxRuntimeNet(torch.nn.Module):
    """The folded fp32 network exported to ONNX for one input shape and run by ONNX Runtime's
    CPU execution provider, standing in for the network inside `predict_batch_compact`."""

    def __init__(self, net: torch.nn.Module, batch: int, tile: int, threads: int) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        with tempfile.TemporaryDirectory() as tmp:  # the session holds the model once loaded
            path = str(Path(tmp) / "net.onnx")
            with torch.no_grad(), mock.patch.object(torch, "eye", _eye_as_comparison):
                torch.onnx.export(fold_batchnorm(net).float().eval(), (torch.rand(batch, 3, tile, tile),),
                                  path, input_names=["x"], output_names=["ns", "hv", "nc"], dynamo=False)
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.version = onnxruntime.__version__

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.session.run(None, {"x": np.ascontiguousarray(x.float().numpy())})
        return {name: torch.from_numpy(a) for name, a in zip(("ns", "hv", "nc"), out, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", nargs="+", default=[f"{DEFAULT_TILE_SIZE}x16", f"{DEFAULT_TILE_SIZE}x4"],
                        help="TILExBATCH, e.g. 256x16 576x2")
    parser.add_argument("--margin", type=int, default=DEFAULT_MARGIN)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--configs", action="store_true", help="also the table of network sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    auto = autocast_dtype(cpu)
    print(cpu_header(args.threads))
    model = load_checkpoint(args.checkpoint or default_checkpoint_path())
    base = model.net.eval()
    previous = base.to(memory_format=torch.channels_last) if auto is not None else base
    engine, engine32 = _prepared(model, "auto", "torch"), _prepared(model, "fp32", "torch")
    int8_file = int8_model_path(model.path)
    print(f"# checkpoint sha256 {model.sha256[:12]}; int8 network: "
          + (int8_file.name if int8_file.is_file() else "none (wsi-pipeline quantize-model makes one)"))
    print("| path | tile × batch | ms/tile | ms per output Mpx | GFLOP/tile | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        tile, batch = (int(v) for v in shape.lower().split("x"))
        tiles = np.random.default_rng(0).integers(0, 256, (batch, tile, tile, 3), dtype=np.uint8)
        gflop = forward_flops(base, tile) / 1e9
        out_mpx = (tile - 2 * args.margin) ** 2 / 1e6
        runs = {
            "engine, PyTorch (" + ("bf16 weights" if auto else "fp32") + ", folded)":
                lambda t=tiles: predict_batch_compact(engine, t, cpu),
            "previous (" + ("bf16 autocast" if auto else "fp32") + ", unfolded)":
                lambda t=tiles: previous_path(previous, t, auto),
        }
        if openvino_available():  # a fresh copy per shape: it pads a smaller batch to one compiled
            openvino = _prepared(model, "auto", "openvino")
            runs["engine, OpenVINO " + ("bf16" if auto else "fp32")] = (
                lambda t=tiles, net=openvino: predict_batch_compact(net, t, cpu))
            if auto is not None:  # the fp32 row ONNX Runtime's compares with
                openvino32 = _prepared(model, "fp32", "openvino")
                runs["engine, OpenVINO fp32"] = (
                    lambda t=tiles, net=openvino32: predict_batch_compact(net, t, cpu, "fp32"))
            if int8_file.is_file():
                int8 = _prepared(model, "int8", "openvino")
                runs["engine, OpenVINO int8"] = (
                    lambda t=tiles, net=int8: predict_batch_compact(net, t, cpu, "int8"))
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            ort = OnnxRuntimeNet(base, batch, tile, args.threads)
            runs[f"ONNX Runtime {ort.version} fp32 (CPU provider; not an engine back end)"] = (
                lambda t=tiles, net=ort: predict_batch_compact(net, t, cpu, "fp32"))
        if auto is not None:
            runs["engine fp32 (folded)"] = lambda t=tiles: predict_batch_compact(engine32, t, cpu, "fp32")
        for name, fn in runs.items():
            ms = best_seconds(fn, args.repeats) / batch * 1000
            print(f"| {name} | {tile} × {batch} | {ms:.1f} | {ms / out_mpx:.0f} | {gflop:.1f} "
                  f"| {gflop / ms * 1000:.0f} |", flush=True)
    for row in peak_rows(args.repeats):
        print(row, flush=True)
    if args.configs:
        print("\n| config | params total (M) | params per encoder (M) | engine ms/tile (256² × 8) |")
        print("|---|---|---|---|")
        for name, kw in CONFIGS.items():
            net = MultiTaskNet(**kw).eval()
            total = sum(p.numel() for p in net.parameters()) / 1e6
            enc = sum(p.numel() for p in net.encoders["ns"].parameters()) / 1e6
            fast = _prepared(bare_model(net), "auto", "torch")
            tiles = np.random.default_rng(0).integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
            seconds = best_seconds(lambda f=fast, t=tiles: predict_batch_compact(f, t, cpu), args.repeats)
            ms = seconds / 8 * 1000
            print(f"| {name} | {total:.1f} | {enc:.2f} | {ms:.1f} |", flush=True)


def _prepared(model, precision, backend):  # noqa: ANN001, ANN202 - a fresh copy each time
    """The engine's inference copy of `model`'s network on the CPU (`model.predictors`)."""
    return load_predictor(model, choose_runtime("cpu", precision, backend), reuse=False).net


if __name__ == "__main__":
    main()
