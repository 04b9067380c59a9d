"""Slide post-processing speed (maps.zarr -> nuclei.parquet), one checkout against another.

Times only `postproc.slide.postprocess_slide` (the cohort's postproc stage) on an existing
maps.zarr, default settings, no Dask cluster, `--workers` workers (the checkout's own local
execution: worker processes since `postproc.pool`, threads before), and reports
s/mm² of tissue (maps.zarr's `tissue_mm2`). Each checkout given with `--checkout` runs in its
own subprocess (its own PYTHONPATH), alternately, `--repeats` times, so that a shared machine
disturbs every checkout alike: compare the ratio, not the absolute figures. Then one serial
pass per checkout (one thread, chunk after chunk) times the steps of a chunk task by wrapping
the module functions that exist in that checkout (inclusive times; nested steps are also
counted in their parents), and the tables of all checkouts are compared (pyarrow read,
pandas `DataFrame.equals`, geometry bytes included).

    python benchmarks/postproc_slide_speed.py --maps SLIDE_DIR/maps.zarr \\
        --checkout ref=/work/wt-ref --checkout new=. --repeats 3

Get a maps.zarr with `python benchmarks/wsi_throughput.py --layout tiled --sizes 4096
--workdir DIR` (DIR/out/tiled_4096/maps.zarr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (module, function) wrapped for the per-step breakdown, where the checkout has them (older
#: checkouts measured in chunks.py, newer ones in measure.nucleus_table).
STEPS = (
    ("wsi_pipeline.postproc.chunks", "_read_window"),
    ("wsi_pipeline.postproc.chunks", "foreground_box"),
    ("wsi_pipeline.postproc.chunks", "segment_instances"),
    ("wsi_pipeline.postproc.watershed", "foreground"),
    ("wsi_pipeline.postproc.watershed", "hv_edges"),
    ("wsi_pipeline.postproc.watershed", "watershed"),
    ("wsi_pipeline.postproc.watershed", "step2"),
    ("wsi_pipeline.postproc.watershed", "vote_types"),
    ("wsi_pipeline.postproc.watershed", "relabel"),
    ("wsi_pipeline.postproc.chunks", "owned_nuclei"),
    ("wsi_pipeline.postproc.chunks", "measure_instances"),
    ("wsi_pipeline.postproc.chunks", "measure_shapes"),
    ("wsi_pipeline.postproc.chunks", "nucleus_table"),
    ("wsi_pipeline.postproc.measure", "measure_shapes"),
    ("wsi_pipeline.postproc.measure", "_polygons"),
    ("wsi_pipeline.postproc.chunks", "shapely"),  # simplify, validity, transform, WKB
    ("wsi_pipeline.postproc.measure", "shapely"),  # the same, since measure.nucleus_table
    ("wsi_pipeline.postproc.chunks", "bbox_array"),
    ("wsi_pipeline.postproc.measure", "bbox_array"),
)


def _cpu() -> str:
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; flags {' '.join(shown) or 'none of avx2/avx512'}; {os.cpu_count()} logical CPUs"


# ---------------------------------------------------------------- in the checkout's process
def _timed_run(maps: Path, out: Path, workers: int) -> dict:
    from wsi_pipeline.postproc.config import ChunkingConfig, PostprocConfig
    from wsi_pipeline.postproc.slide import postprocess_slide

    t0 = time.perf_counter()
    res = postprocess_slide(maps, out, PostprocConfig(), progress=False,
                            chunking=ChunkingConfig(workers=workers))
    return {"seconds": time.perf_counter() - t0, "n_nuclei": res.n_nuclei}


def _wrap(totals: dict[str, float], name: str, fn):
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
    return timed


class _TimedShapely:
    """The `shapely` module as chunks.py sees it, every function call timed under one name."""

    def __init__(self, module, totals: dict[str, float]):
        self._module, self._totals = module, totals

    def __getattr__(self, attr: str):
        value = getattr(self._module, attr)
        return _wrap(self._totals, "shapely (simplify, valid, transform, WKB)", value) \
            if callable(value) and not isinstance(value, type) else value


def _breakdown(maps: Path) -> dict:
    import importlib
    import math

    from wsi_pipeline.postproc.chunks import chunk_windows, process_chunk
    from wsi_pipeline.postproc.config import ChunkingConfig, PostprocConfig
    from wsi_pipeline.postproc.slide import _maps_context

    totals: dict[str, float] = {}
    for module_name, attr in STEPS:
        module = importlib.import_module(module_name)
        if not hasattr(module, attr):
            continue
        if attr == "shapely":
            module.shapely = _TimedShapely(module.shapely, totals)
        else:
            setattr(module, attr, _wrap(totals, attr, getattr(module, attr)))
    chunking = ChunkingConfig()
    ctx, _, chunk_hw = _maps_context(maps, PostprocConfig(), chunking)
    windows = chunk_windows(ctx.map_hw, chunk_hw, math.ceil(chunking.halo_um / ctx.mpp))
    t0 = time.perf_counter()
    for win in windows:
        process_chunk(ctx, win)
    totals["process_chunk (all)"] = time.perf_counter() - t0
    return totals


def _child(args: argparse.Namespace) -> None:
    if args.child == "run":
        print(json.dumps(_timed_run(args.maps, args.out, args.workers)))
    else:
        print(json.dumps(_breakdown(args.maps)))


# ---------------------------------------------------------------- driver
def _in_checkout(path: Path, mode: str, args: argparse.Namespace, out: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--maps", str(args.maps),
           "--workers", str(args.workers)]
    if out is not None:
        cmd += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(path.resolve())}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        sys.exit(f"{path} ({mode}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same_tables(paths: list[Path]) -> bool:
    import pyarrow.parquet as pq

    first = pq.read_table(paths[0])
    ref = first.to_pandas()
    return all(pq.read_table(p).schema.equals(first.schema) and pq.read_table(p).to_pandas().equals(ref)
               for p in paths[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--maps", type=Path, required=True, help="a slide folder's maps.zarr")
    ap.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH",
                    help="a checkout to time (its root goes on PYTHONPATH); repeatable, the first "
                         "is the reference of the ratios (default: this checkout alone)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2,
                    help="chunking.workers: local workers (processes; threads in older checkouts)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the serial per-step pass")
    ap.add_argument("--child", choices=("run", "breakdown"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return

    import zarr

    checkouts = [(c.split("=", 1)[0], Path(c.split("=", 1)[1])) for c in args.checkout] or [
        ("this", Path(__file__).resolve().parents[1])]
    mm2 = float(zarr.open_group(str(args.maps), mode="r").attrs["tissue_mm2"])
    print(f"# CPU: {_cpu()}")
    print(f"# maps {args.maps}: {mm2:.3f} mm² of tissue; {args.workers} local workers")
    work = Path(tempfile.mkdtemp(prefix="postproc_slide_speed_"))
    times: dict[str, list[float]] = {name: [] for name, _ in checkouts}
    for rep in range(args.repeats):
        for name, path in checkouts:
            res = _in_checkout(path, "run", args, work / f"{name}.parquet")
            times[name].append(res["seconds"])
            print(f"repeat {rep + 1} {name}: {res['seconds']:.2f} s, {res['seconds'] / mm2:.2f} s/mm², "
                  f"{res['n_nuclei']} nuclei", flush=True)
    ref = checkouts[0][0]
    print("\ncheckout   median s   s/mm²   ratio to " + ref)
    for name, _ in checkouts:
        med = statistics.median(times[name])
        print(f"{name:<10} {med:8.2f} {med / mm2:7.2f}   {statistics.median(times[ref]) / med:.2f}x")
    same = _same_tables([work / f"{name}.parquet" for name, _ in checkouts])
    print(f"tables identical (pyarrow schema + pandas DataFrame.equals): {same}")
    if not args.no_breakdown:
        steps = {name: _in_checkout(path, "breakdown", args) for name, path in checkouts}
        keys = list(dict.fromkeys(k for s in steps.values() for k in s))
        print("\nserial pass, one thread, inclusive seconds per step:")
        print(f"{'step':<44}" + "".join(f"{name:>10}" for name, _ in checkouts))
        for k in keys:
            print(f"{k:<44}" + "".join(f"{steps[name].get(k, float('nan')):>10.2f}"
                                       for name, _ in checkouts))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
