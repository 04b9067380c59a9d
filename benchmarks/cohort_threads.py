"""End-to-end time of `wsi-pipeline run` on a small cohort: the default embedded cluster against
`--workers 0` (no cluster), and the embedded cluster with one inference thread, which is what
every cohort of two or more slides got before issue 27 (Dask's nanny set MKL_NUM_THREADS=1 in
the inference worker; `cluster.infer_threads: 1` reproduces it).

The cohort is two copies of one crop of ../shared/data/slides/CMU-1-Small-Region.svs (20×,
0.499 µm/px, all tissue), written as pyramidal JPEG TIFFs. Each variant runs the real command in
a subprocess on a fresh output folder with the shipped weights; variants alternate within each
round, so a machine that is shared (another job's load rising and falling) disturbs all of them
alike. Per run it reports the wall time, s per mm² of tissue (wall time over the manifest's
tissue_mm2 of both slides), each slide's inference time and the thread / OpenVINO stream count
its log reports.

    python benchmarks/cohort_threads.py                       # 1024² crops, 2 rounds
    python benchmarks/cohort_threads.py --size 2048 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CMU = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
MPP = 0.499

#: name -> (extra CLI arguments, run-config YAML or None)
VARIANTS: dict[str, tuple[list[str], str | None]] = {
    "cluster (default)": ([], None),
    "--workers 0": (["--workers", "0"], None),
    "cluster, 1 inference thread (before)": ([], "cluster:\n  infer_threads: 1\n"),
}


def write_cohort(folder: Path, size: int, copies: int = 2) -> list[Path]:
    """`copies` identical pyramidal TIFFs of a size² crop from the middle of CMU."""
    import openslide
    import tifffile

    with openslide.OpenSlide(str(CMU)) as s:
        w, h = s.dimensions
        if size > min(w, h):
            raise SystemExit(f"--size {size}: larger than {CMU.name} ({w} x {h})")
        x, y = (w - size) // 2, (h - size) // 2
        rgb = np.asarray(s.read_region((x, y), 0, (size, size)).convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)
    res = 1e4 / MPP
    paths = []
    for i in range(copies):
        path = folder / f"crop_{i}.tif"
        with tifffile.TiffWriter(path) as tw:
            for level, img in enumerate((rgb, rgb[::2, ::2], rgb[::4, ::4])):
                tw.write(np.ascontiguousarray(img), tile=(256, 256), photometric="rgb",
                         compression="jpeg", resolution=(res / 2**level, res / 2**level),
                         resolutionunit="CENTIMETER", subfiletype=1 if level else 0)
        paths.append(path)
    return paths


def run_variant(cohort: Path, out: Path, args: list[str], config: str | None) -> dict:
    """One `wsi-pipeline run` of the cohort into a fresh `out`; its timings."""
    cmd = [sys.executable, "-c", "from wsi_pipeline.cli import main; main()", "run", str(cohort),
           "-o", str(out), *args]
    if config is not None:
        cfg = out.parent / f"{out.name}.yaml"
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    import pandas as pd

    manifest = pd.read_parquet(out / "manifest.parquet")
    tissue = float(manifest["tissue_mm2"].sum())
    infer, streams, threads = [], set(), set()
    for log in sorted((out / "logs").glob("crop_*.log")):
        text = log.read_text()
        infer += [float(s) for s in re.findall(r"infer done in ([\d.]+) s", text)]
        streams |= set(re.findall(r"(\d+) stream\(s\)", text))
        threads |= set(re.findall(r"inference on (\d+) thread\(s\)", text))
    return {"wall_s": round(wall, 1), "tissue_mm2": round(tissue, 4),
            "s_per_mm2": round(wall / tissue, 1) if tissue else None,
            "infer_s": infer, "ov_streams": sorted(streams), "worker_threads": sorted(threads),
            "load_before": round(os.getloadavg()[0], 2)}


def cpu_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    have = [f for f in ("avx2", "avx512_bf16", "amx_bf16") if f in flags]
    shown = " ".join(have) or "none of avx2/avx512_bf16/amx_bf16"
    return f"{model}, {os.cpu_count()} logical CPUs, flags: {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the crop, level-0 px")
    parser.add_argument("--rounds", type=int, default=2, help="times every variant runs, alternated")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--work-dir", type=Path, help="where the cohort and outputs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cohort_threads-"))
    cohort = work / "cohort"
    write_cohort(cohort, args.size)
    print(f"CPU: {cpu_line()}; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    print(f"cohort: 2 x {args.size}² crop of {CMU.name} in {cohort}", flush=True)
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for i, name in enumerate(args.variants):
            extra, config = VARIANTS[name]
            res = run_variant(cohort, work / f"out_r{r}_v{i}", extra, config)
            results[name].append(res)
            print(f"round {r + 1} {name:40s} {res['wall_s']:7.1f} s  {res['s_per_mm2']} s/mm²  infer "
                  f"{res['infer_s']} s  threads {res['worker_threads'] or '-'}  streams "
                  f"{res['ov_streams'] or '-'}  load {res['load_before']}", flush=True)
    print("\nmedian over rounds:")
    for name, runs in results.items():
        wall = float(np.median([x["wall_s"] for x in runs]))
        per = float(np.median([x["s_per_mm2"] for x in runs]))
        print(f"  {name:40s} {wall:7.1f} s   {per:6.1f} s/mm² of tissue")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_line(), "size": args.size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
