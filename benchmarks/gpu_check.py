"""The engine on a generated large slide on a GPU: s/mm² per stage, GPU utilisation, where time goes.

Run through `benchmarks/gpu_check.sh` (which checks the environment first); directly:

    python benchmarks/gpu_check.py [--size 40000] [--batch-sizes 16 64] [--reader-threads 4 8]
    python benchmarks/gpu_check.py --cpu-smoke          # the same path, 4096² slide, CPU, no GPU

Builds a pyramidal tiled TIFF with `benchmarks/wsi_throughput.py`'s `build_slide` (tissue islands
cut from ../shared/data/slides/CMU-1-Small-Region.svs on white; `--source` another slide; where
neither exists, synthetic H&E-like islands, said so in the summary), then runs the engine on it in
a subprocess per configuration (open_slide → infer_slide → postprocess_slide → export_slide, as
`wsi_throughput.py --run-one` does, with `device`, `batch_size`, `reader_threads` and `precision`
given; default precision auto = fp16/bf16 autocast on CUDA). The first configuration of the sweep
runs end to end; the others (each further batch size × reader-thread count) run inference only,
which is all they change. While they run, `nvidia-smi --query-gpu=utilization.gpu,memory.used
--format=csv,noheader,nounits -lms 500` samples the GPU in the background; each sample is stamped
on arrival and the ones inside a run's inference stage give its mean/median utilisation.

Results go to `--out` (default: $OUT where set, as on the device machine, else
/tmp/gpu_check): summary.json, nvidia_smi.csv (stamped samples), one JSON per run; the slide
itself goes to `--workdir` (default /tmp/gpu_check_work), never to $OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import wsi_throughput  # noqa: E402 - the slide builder and RSS sampler live there

#: defaults of a GPU run and of --cpu-smoke; an option given on the command line wins over both
FULL = {"size": 40000, "island": 1024, "tissue_fraction": 0.02, "batch_sizes": [16, 64],
        "reader_threads": [4, 8], "device": "cuda"}
SMOKE = {"size": 4096, "island": 512, "tissue_fraction": 0.03, "batch_sizes": [16, 8],
         "reader_threads": [2], "device": "cpu"}


# ---------------------------------------------------------------- pure helpers
def sweep(batch_sizes: list[int], reader_threads: list[int]) -> list[dict]:
    """The runs: the first (batch, readers) pair end to end, every other pair inference only."""
    runs = [{"batch_size": b, "reader_threads": r} for b in batch_sizes for r in reader_threads]
    for i, run in enumerate(runs):
        run["stages"] = "all" if i == 0 else "infer"
    return runs


def util_during(samples: list[tuple[float, float, float]], t0: float, t1: float) -> dict:
    """Mean/median/max GPU utilisation (%) and max memory (MiB) of the (time, util, mem) samples
    taken within [t0, t1]; None values where there are none."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if not inside:
        return {"samples": 0, "util_mean": None, "util_median": None, "util_max": None,
                "mem_max_mib": None}
    util = [s[1] for s in inside]
    return {"samples": len(inside), "util_mean": round(statistics.fmean(util), 1),
            "util_median": round(statistics.median(util), 1), "util_max": max(util),
            "mem_max_mib": max(s[2] for s in inside)}


def where_time_goes(res: dict) -> list[str]:
    """Plain-language reading of one run's stage seconds: shares of the end to end, and what
    bounds the inference stage (the model, the tile readers, or the writer)."""
    s = res["seconds"]
    total = sum(s.get(k, 0.0) for k in ("infer_wall", "postproc", "export")) or 1e-9
    lines = [f"{k}: {s[k]:.1f} s ({100 * s[k] / total:.0f} %)"
             for k in ("infer_wall", "postproc", "export") if k in s]
    wall = s.get("infer_wall", 0.0) - s.get("tissue", 0.0) - s.get("stain", 0.0)
    if wall > 0:
        readers = max(int(res.get("reader_threads", 1)), 1)
        busy = {"model": s.get("model", 0.0) / wall,
                "tile readers": s.get("read", 0.0) / readers / wall,
                "zarr writer": s.get("write", 0.0) / wall}
        lines.append("inference stage (after tissue detection): " + ", ".join(
            f"{k} busy {100 * v:.0f} %" for k, v in busy.items()))
        if s.get("first_batch") and s.get("model"):
            lines.append(f"first batch {s['first_batch']:.1f} s of the model's {s['model']:.1f} s "
                         "(compilation / warm-up)")
        top = max(busy, key=busy.get)
        lines.append(f"bound by: {top}" + (
            " (more reader_threads or faster decoding would help)" if top == "tile readers" else
            " (more CPU for the single writer thread would help)" if top == "zarr writer" else ""))
    return lines


# ---------------------------------------------------------------- synthetic tissue (no CMU slide)
def synthetic_islands(rng: np.random.Generator, n: int, side: int) -> list[np.ndarray]:
    """`n` H&E-like squares: pink stroma with dark purple nuclei (ellipses of 3-6 µm radius at
    0.499 µm/px), slightly blurred. Only for machines without the CMU slide: the counts of nuclei
    and the post-processing cost they give are not a real slide's."""
    from scipy import ndimage

    out = []
    yy, xx = np.mgrid[0:side, 0:side]
    for _ in range(n):
        img = np.empty((side, side, 3), np.float32)
        img[:] = (232, 168, 200)
        img += rng.normal(0, 8, (side, side, 1))
        k = int(side * side / 900)  # about one nucleus per 30² px
        for cy, cx, ry, rx in zip(rng.integers(0, side, k), rng.integers(0, side, k),
                                  rng.uniform(6, 12, k), rng.uniform(6, 12, k), strict=True):
            y0, y1, x0, x1 = int(cy - ry), int(cy + ry) + 1, int(cx - rx), int(cx + rx) + 1
            sl = (slice(max(y0, 0), max(y1, 0)), slice(max(x0, 0), max(x1, 0)))
            inside = ((yy[sl] - cy) / ry) ** 2 + ((xx[sl] - cx) / rx) ** 2 <= 1
            img[sl][inside] = (95, 60, 145)
        img = ndimage.gaussian_filter(img, (1.0, 1.0, 0))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


# ---------------------------------------------------------------- one run, one process
def run_one(slide_path: Path, out_dir: Path, checkpoint: Path, cfg: dict) -> dict:
    """The engine on one slide with the given device/batch/readers/precision, timed per stage
    (monotonic seconds and wall-clock stamps of each stage, to line up with nvidia-smi)."""
    import torch

    torch.set_num_threads(cfg["threads"])
    from wsi_pipeline.export.config import ExportConfig
    from wsi_pipeline.export.stage import export_slide
    from wsi_pipeline.inference.config import InferConfig
    from wsi_pipeline.inference.slide import infer_slide
    from wsi_pipeline.io import open_slide
    from wsi_pipeline.model import load_checkpoint
    from wsi_pipeline.model.predictors import Predictor
    from wsi_pipeline.model.runtime import choose_runtime
    from wsi_pipeline.postproc import PostprocConfig
    from wsi_pipeline.postproc.config import ChunkingConfig
    from wsi_pipeline.postproc.slide import postprocess_slide

    runtime = choose_runtime(cfg["device"], cfg["precision"], cfg.get("backend") or "auto")
    device = runtime.device
    sampler = wsi_throughput.RssSampler()
    sampler.start()
    model = load_checkpoint(checkpoint, map_location=str(device))
    icfg = InferConfig(device=cfg["device"], batch_size=cfg["batch_size"],
                       reader_threads=cfg["reader_threads"], precision=cfg["precision"],
                       **({"backend": cfg["backend"]} if cfg.get("backend") else {}))
    slide_dir = out_dir / f"{slide_path.stem}_b{cfg['batch_size']}_r{cfg['reader_threads']}"
    first: dict[str, float] = {}
    inner = Predictor.predict_compact

    def timed(*a, **k):  # noqa: ANN002, ANN003, ANN202 - the first batch apart (compile, warm-up)
        if first:
            return inner(*a, **k)
        t = time.perf_counter()
        res = inner(*a, **k)
        first["s"] = time.perf_counter() - t
        return res

    Predictor.predict_compact = timed  # type: ignore[method-assign]
    stamps: dict[str, list[float]] = {}
    sampler.stage = "infer"
    stamps["infer"] = [time.time()]
    t0 = time.perf_counter()
    with open_slide(slide_path) as slide:
        inf = infer_slide(slide, slide_dir, icfg, model, progress=False)
    seconds = {**{k: round(v, 2) for k, v in inf.timings.items()},
               "infer_wall": round(time.perf_counter() - t0, 2), "first_batch": round(first.get("s", 0), 2)}
    Predictor.predict_compact = inner  # type: ignore[method-assign]
    stamps["infer"].append(time.time())
    import zarr

    ran = zarr.open_group(str(inf.maps), mode="r").attrs.get("backend") or {}  # what the engine ran
    n_nuclei = None
    if cfg["stages"] == "all":
        sampler.stage = "postproc"
        stamps["postproc"] = [time.time()]
        t0 = time.perf_counter()
        post = postprocess_slide(inf.maps, slide_dir / "nuclei.parquet", PostprocConfig(), progress=False,
                                 chunking=ChunkingConfig(workers=cfg["postproc_workers"]))
        seconds["postproc"] = round(time.perf_counter() - t0, 2)
        stamps["postproc"].append(time.time())
        n_nuclei = post.n_nuclei
        sampler.stage = "export"
        stamps["export"] = [time.time()]
        t0 = time.perf_counter()
        export_slide(slide_dir, ExportConfig(geojson=True))
        seconds["export"] = round(time.perf_counter() - t0, 2)
        stamps["export"].append(time.time())
    gpu = {}
    if device.type == "cuda":
        gpu = {"name": torch.cuda.get_device_name(device),
               "torch_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)}
    amp = runtime.float_dtype
    if not cfg["keep_outputs"]:
        shutil.rmtree(slide_dir, ignore_errors=True)
    return {
        **{k: cfg[k] for k in ("batch_size", "reader_threads", "stages", "threads")},
        "device": str(device), "precision": f"{cfg['precision']} -> "
        f"{ran.get('precision') or ('fp32' if amp is None else str(amp).removeprefix('torch.'))}",
        "backend": ran.get("backend", "torch"), "backend_version": ran.get("version"),
        "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu,
        "tissue_mm2": inf.tissue_mm2, "n_tiles": inf.n_tiles, "n_runs": inf.n_runs,
        "n_nuclei": n_nuclei, "seconds": seconds, "stamps": stamps,
        "model_sha256": model.sha256,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_by_stage": sampler.stop(),
    }


# ---------------------------------------------------------------- GPU sampling
class SmiSampler(threading.Thread):
    """nvidia-smi's utilization.gpu and memory.used every 500 ms, stamped with time.time() as each
    line arrives; also appended to a CSV file."""

    def __init__(self, csv: Path, interval_ms: int = 500) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []
        self.csv = csv
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-lms", str(interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def run(self) -> None:
        with self.csv.open("w") as f:
            f.write("unix_time,utilization_gpu_pct,memory_used_mib\n")
            for line in self.proc.stdout:  # type: ignore[union-attr]
                parts = [p.strip() for p in line.split(",")]
                try:
                    util, mem = float(parts[0]), float(parts[1])  # first GPU only
                except (ValueError, IndexError):
                    continue
                now = time.time()
                self.samples.append((now, util, mem))
                f.write(f"{now:.3f},{util:g},{mem:g}\n")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.join(5)


# ---------------------------------------------------------------- driver
def _default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("/tmp/gpu_check")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="4096² slide, 2 islands of 512², device cpu, batch 16 then 8, 2 readers")
    ap.add_argument("--size", type=int, default=None, help="slide side, level-0 px (default 40000)")
    ap.add_argument("--island", type=int, default=None, help="tissue island side, level-0 px (1024)")
    ap.add_argument("--tissue-fraction", type=float, default=None, help="default 0.02")
    ap.add_argument("--mpp", type=float, default=0.499)
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="default cuda")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ap.add_argument("--backend", default=None, choices=("auto", "torch", "openvino"),
                    help="infer.backend (default: the engine's; auto = PyTorch on CUDA)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help="first: end to end; others: inference only (default 16 64)")
    ap.add_argument("--reader-threads", type=int, nargs="+", default=None,
                    help="tile reader threads to sweep (default 4 8)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    ap.add_argument("--postproc-workers", type=int, default=None, help="default: all cores")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped weights")
    ap.add_argument("--source", type=Path, default=None,
                    help="slide to cut tissue islands from (default CMU-1-Small-Region)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default $OUT or /tmp/gpu_check)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gpu_check_work"),
                    help="where the slide and the engine's outputs go (default /tmp/gpu_check_work)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the engine's maps and tables")
    ap.add_argument("--run-one", nargs=3, metavar=("SLIDE", "OUT", "CKPT"), help=argparse.SUPPRESS)
    ap.add_argument("--run-cfg", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.run_one:
        slide, out, ckpt = map(Path, args.run_one)
        print(json.dumps(run_one(slide, out, ckpt, json.loads(args.run_cfg))))
        return

    for key, value in (SMOKE if args.cpu_smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda":  # before any slide is cut: the engine's own decision, asked early
        from wsi_pipeline.model.runtime import RuntimeUnavailable, choose_runtime

        try:
            choose_runtime("cuda")
        except RuntimeUnavailable as exc:
            sys.exit(f"{exc}; --cpu-smoke runs the same path on the CPU")
    cores = os.cpu_count() or 1
    threads = args.threads or cores
    out = args.out or _default_out()
    out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is None:
        from wsi_pipeline.model import default_checkpoint_path

        args.checkpoint = default_checkpoint_path()

    source = args.source or wsi_throughput.CMU
    tissue = f"islands cut from {source.name}"
    if source.is_file():
        wsi_throughput.CMU = source
    else:
        wsi_throughput._islands = synthetic_islands  # noqa: SLF001 - no slide to cut from here
        tissue = f"SYNTHETIC H&E-like islands ({source} not found): nuclei counts are not a real slide's"
    print(f"tissue: {tissue}", flush=True)
    slide = args.workdir / f"gpu_check_{args.size}.tif"
    t0 = time.perf_counter()
    info = wsi_throughput.build_slide(slide, args.size, args.mpp, args.tissue_fraction, args.island,
                                      seed=args.size)
    build_s = time.perf_counter() - t0
    print(f"slide {slide} ({args.size}² px, {info['islands']} islands) built in {build_s:.1f} s", flush=True)

    smi = None
    if args.device != "cpu" and shutil.which("nvidia-smi"):
        smi = SmiSampler(out / "nvidia_smi.csv")
        smi.start()
    elif args.device != "cpu":
        print("nvidia-smi not found: no GPU utilisation samples", flush=True)
    runs = []
    try:
        for run in sweep(args.batch_sizes, args.reader_threads):
            cfg = {**run, "device": args.device, "precision": args.precision, "backend": args.backend,
                   "threads": threads,
                   "postproc_workers": args.postproc_workers or cores, "keep_outputs": args.keep_outputs}
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--run-one", str(slide), str(args.workdir / "out"),
                 str(args.checkpoint), "--run-cfg", json.dumps(cfg)],
                capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                (out / "failed_run.log").write_text(proc.stdout + proc.stderr)
                sys.exit(f"run {run} failed (log in {out / 'failed_run.log'}):\n{proc.stderr[-4000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["process_s"] = round(time.perf_counter() - t0, 2)
            mm2 = max(res["tissue_mm2"], 1e-9)
            res["seconds_per_mm2"] = {k: round(v / mm2, 3) for k, v in res["seconds"].items()}
            res["end_to_end_s_per_mm2"] = round(sum(
                res["seconds"].get(k, 0.0) for k in ("infer_wall", "postproc", "export")) / mm2, 3)
            if smi is not None:
                time.sleep(1.0)  # the last samples of the stage
                res["gpu_during_infer"] = util_during(smi.samples, *res["stamps"]["infer"])
            res["where_time_goes"] = where_time_goes(res)
            runs.append(res)
            name = f"run_b{run['batch_size']}_r{run['reader_threads']}.json"
            (out / name).write_text(json.dumps(res, indent=2))
            _print_run(res)
    finally:
        if smi is not None:
            smi.stop()

    summary = {
        "host": {"cpu": cpu_summary(), "cores": cores, "python": platform.python_version()},
        "nvidia_smi": _smi_info() if args.device != "cpu" else None,
        "slide": {"path": str(slide), "size": args.size, "mpp": args.mpp, "tissue": tissue,
                  "build_s": round(build_s, 1), **info},
        "runs": runs,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsummary: {out / 'summary.json'}")


def cpu_summary() -> dict:
    """CPU model and the flags that decide the CPU path (bf16, AVX-512, VNNI)."""
    from wsi_pipeline.model.predict import cpu_flags

    flags = cpu_flags()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "flags": {f: f in flags for f in
                                      ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")}}


def _smi_info() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                           "power.limit", "--format=csv"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def _print_run(r: dict) -> None:
    s = r["seconds_per_mm2"]
    print(f"\nbatch {r['batch_size']}, {r['reader_threads']} readers, {r['device']}, {r['backend']}, "
          f"{r['precision']}, "
          f"{r['stages']}: {r['tissue_mm2']:.2f} mm² tissue, {r['n_tiles']} tiles, "
          f"{r['n_nuclei'] if r['n_nuclei'] is not None else '-'} nuclei, peak RSS {r['peak_rss_mb']} MB")
    print("  s/mm²: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items())
          + (f"; end to end {r['end_to_end_s_per_mm2']:.2f}" if r["stages"] == "all" else ""))
    if r.get("gpu_during_infer"):
        g = r["gpu_during_infer"]
        print(f"  GPU during inference: util mean {g['util_mean']} %, median {g['util_median']} %, "
              f"max memory {g['mem_max_mib']} MiB ({g['samples']} samples); "
              f"torch max allocated {r['gpu'].get('torch_max_allocated_mib')} MiB")
    for line in r["where_time_goes"]:
        print(f"  {line}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
