"""Whole-slide throughput: seconds per mm² of tissue per stage, and peak RSS, vs slide size.

Builds pyramidal tiled TIFFs (OpenSlide `generic-tiff`, 3 levels, JPEG tiles) whose tissue
is real: crops of ../shared/data/slides/CMU-1-Small-Region.svs (20×, 0.499 µm/px) scattered as
islands over a white background at a fixed tissue fraction, so that slides of different sizes
differ in extent, not in content. Each slide then runs the whole engine in its own subprocess
(open_slide → infer_slide → postprocess_slide → export_slide), so the peak RSS reported
(getrusage of that subprocess) belongs to that slide alone.

    python benchmarks/wsi_throughput.py --sizes 10000            # quick
    python benchmarks/wsi_throughput.py --sizes 10000 40000      # the README figures
    python benchmarks/wsi_throughput.py --random-compact ...     # no trained weights needed
    python benchmarks/wsi_throughput.py --precision int8 ...     # the int8 network (model.quantize)

A random network's maps are noise, so its post-processing time is not representative;
with the shipped checkpoint it is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CMU = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
TILE = 256  # TIFF storage tile of the synthetic slides (not the network's input tile)
LEVELS = (1, 2, 4)


# ---------------------------------------------------------------- synthetic slides
def _islands(rng: np.random.Generator, n: int, side: int) -> list[np.ndarray]:
    """`n` square crops of the CMU slide's tissue (rotated/flipped for variety)."""
    import openslide

    with openslide.OpenSlide(str(CMU)) as s:
        w, h = s.dimensions
        src = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB"))
    out = []
    while len(out) < n:
        r, c = rng.integers(0, h - side), rng.integers(0, w - side)
        crop = src[r : r + side, c : c + side]
        if (crop.min(axis=2) < 200).mean() < 0.5:  # mostly glass: try elsewhere
            continue
        out.append(np.ascontiguousarray(np.rot90(crop, rng.integers(4))[:, :: rng.choice([1, -1])]))
    return out


def build_slide(path: Path, size: int, mpp: float, tissue_fraction: float, island: int,
                seed: int) -> dict:
    """Write a `size`² pyramidal TIFF; islands on a jittered grid, never overlapping."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    cells = size // (island * 2)
    n = max(1, round(tissue_fraction * size * size / island**2))
    n = min(n, cells * cells)
    picks = rng.choice(cells * cells, size=n, replace=False)
    crops = _islands(rng, n, island)
    places = []
    for k, cell in enumerate(picks):
        cr, cc = divmod(int(cell), cells)
        jr, jc = rng.integers(0, island, size=2)
        places.append((cr * 2 * island + jr, cc * 2 * island + jc, k))
    scaled = {
        d: [np.asarray(Image.fromarray(c).resize((island // d, island // d), Image.Resampling.BOX))
            for c in crops]
        for d in LEVELS
    }

    def tiles(d: int):
        lw = size // d
        blank = np.full((TILE, TILE, 3), 255, np.uint8)
        for y0 in range(0, lw, TILE):
            for x0 in range(0, lw, TILE):
                tile = None
                for r, c, k in places:
                    r, c, s = r // d, c // d, island // d
                    if r < y0 + TILE and r + s > y0 and c < x0 + TILE and c + s > x0:
                        if tile is None:
                            tile = blank.copy()
                        ra, ca = max(r, y0), max(c, x0)
                        rb, cb = min(r + s, y0 + TILE), min(c + s, x0 + TILE)
                        tile[ra - y0 : rb - y0, ca - x0 : cb - x0] = scaled[d][k][ra - r : rb - r,
                                                                                   ca - c : cb - c]
                yield blank if tile is None else tile

    res = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, d in enumerate(LEVELS):
            lw = size // d
            tif.write(tiles(d), shape=(lw, lw, 3), dtype=np.uint8, tile=(TILE, TILE),
                      compression="jpeg", photometric="rgb", resolution=(res, res),
                      resolutionunit="CENTIMETER", subfiletype=1 if i else 0, metadata=None)
    return {"islands": n, "island_px": island, "tissue_mm2_placed": n * (island * mpp / 1e3) ** 2}


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into a length-`n` axis that mirror it endlessly: 0..n-1, n-1..0, 0..n-1, ..."""
    period = index % (2 * n)
    return np.where(period < n, period, 2 * n - 1 - period)


def build_tiled_slide(path: Path, size: int, mpp: float) -> dict:
    """Write a `size`² pyramidal TIFF covered by the CMU region mirrored endlessly: a section
    as dense as CMU-1-Small-Region itself, glass and all (the 4096² slide of the README)."""
    import openslide
    import tifffile
    from PIL import Image

    with openslide.OpenSlide(str(CMU)) as s:
        w, h = s.dimensions
        src = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB"))
    res = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, d in enumerate(LEVELS):
            level = src if d == 1 else np.asarray(
                Image.fromarray(src).resize((w // d, h // d), Image.Resampling.BOX))
            lh, lw_src = level.shape[:2]
            lw = size // d

            def tiles(level=level, lh=lh, lw_src=lw_src, lw=lw):
                for y0 in range(0, lw, TILE):
                    rows = _reflect(np.arange(y0, y0 + TILE), lh)
                    for x0 in range(0, lw, TILE):
                        yield level[rows[:, None], _reflect(np.arange(x0, x0 + TILE), lw_src)[None, :]]

            tif.write(tiles(), shape=(lw, lw, 3), dtype=np.uint8, tile=(TILE, TILE),
                      compression="jpeg", photometric="rgb", resolution=(res, res),
                      resolutionunit="CENTIMETER", subfiletype=1 if i else 0, metadata=None)
    return {"layout": "tiled CMU-1-Small-Region"}


# ---------------------------------------------------------------- one slide, one process
class RssSampler(threading.Thread):
    """Peak resident memory per stage, sampled from /proc/self/statm every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stage = "start"
        self.peaks: dict[str, float] = {}
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.05):
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * self._page_mb
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), rss)

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        return {k: round(v) for k, v in self.peaks.items()}


def _cpu_line() -> str:
    from wsi_pipeline.model.predict import cpu_flags

    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return f"CPU flags: {' '.join(flags) or 'none of avx2/avx512'}; {os.cpu_count()} logical CPUs"


def _random_compact_checkpoint(path: Path) -> Path:
    from wsi_pipeline.model import MultiTaskNet, save_checkpoint

    net = MultiTaskNet(n_types=5, encoder="resnet18", width=16)
    names = ("background", "other", "inflammatory", "epithelial", "spindle")
    save_checkpoint(path, net, class_names=names, mpp=0.25, meta={"random": True})
    return path


def run_one(slide_path: Path, out_dir: Path, checkpoint: Path, threads: int, precision: str) -> dict:
    """The engine on one slide, timed per stage; prints nothing, returns the figures."""
    import torch

    torch.set_num_threads(threads)
    from wsi_pipeline.export.config import ExportConfig
    from wsi_pipeline.export.stage import export_slide
    from wsi_pipeline.inference.config import InferConfig
    from wsi_pipeline.inference.slide import infer_slide, prepared_network
    from wsi_pipeline.io import open_slide
    from wsi_pipeline.model import load_checkpoint
    from wsi_pipeline.postproc.config import ChunkingConfig, PostprocConfig
    from wsi_pipeline.postproc.slide import postprocess_slide

    cfg = InferConfig(device="cpu", precision=precision)
    sampler = RssSampler()
    sampler.start()
    model = load_checkpoint(checkpoint)
    slide_dir = out_dir / slide_path.stem
    sampler.stage = "infer"
    # The network's one-off preparation (OpenVINO: conversion, ~9 s) apart, so that the engine's
    # time per tile is its steady state; end to end includes it.
    t0 = time.perf_counter()
    prepared_network(model, cfg)
    t_prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_slide(slide_path) as slide:
        inf = infer_slide(slide, slide_dir, cfg, model, progress=False)
    t_infer = time.perf_counter() - t0
    network_ms = _network_ms_per_tile(model, slide_path, cfg)
    sampler.stage = "postproc"
    t0 = time.perf_counter()
    post = postprocess_slide(inf.maps, slide_dir / "nuclei.parquet", PostprocConfig(),
                             progress=False, chunking=ChunkingConfig(workers=threads))
    t_post = time.perf_counter() - t0
    sampler.stage = "export"
    t0 = time.perf_counter()
    summary = export_slide(slide_dir, ExportConfig(geojson=True))
    t_export = time.perf_counter() - t0
    return {
        "slide": slide_path.name,
        "tissue_mm2": inf.tissue_mm2,
        "n_tiles": inf.n_tiles,
        "n_nuclei": post.n_nuclei,
        "seconds": {
            **{k: round(v, 2) for k, v in inf.timings.items()},
            "prepare": round(t_prepare, 2),
            "infer_wall": round(t_infer, 2),
            "postproc": round(t_post, 2),
            "export": round(t_export, 2),
        },
        "n_runs": inf.n_runs,
        "engine_ms_per_run": round(1000 * t_infer / max(inf.n_runs, 1), 1),
        "network_ms_per_tile": round(network_ms, 1),
        "model_sha256": model.sha256,
        "summary_n_nuclei": summary["n_nuclei"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mb_by_stage": sampler.stop(),
    }


def _network_ms_per_tile(model, slide_path: Path, cfg) -> float:
    """The network alone, as the engine calls it (its prepared copy, its batch size, its tile
    size), on real tiles of the slide: the denominator of the engine-to-network ratio."""
    from wsi_pipeline.inference.slide import prepared_network
    from wsi_pipeline.io import open_slide

    predictor = prepared_network(model, cfg)
    with open_slide(slide_path) as slide:
        w, h = slide.dimensions
        side = round(cfg.tile_size * model.mpp / slide.mpp)
        tiles = np.stack([slide.read_region_at_mpp(w / 2 + k * side, h / 2, (cfg.tile_size,) * 2,
                                                   model.mpp) for k in range(cfg.batch_size)])
    predictor.predict_compact(tiles)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predictor.predict_compact(tiles)
        times.append(time.perf_counter() - t0)
    return 1000 * min(times) / cfg.batch_size


# ---------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000],
                    help="slide sides in level-0 pixels")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: shipped weights")
    ap.add_argument("--random-compact", action="store_true",
                    help="use a randomly initialised compact model (ResNet-18, width 16)")
    ap.add_argument("--tissue-fraction", type=float, default=0.02)
    ap.add_argument("--island", type=int, default=1024, help="island side, level-0 px")
    ap.add_argument("--mpp", type=float, default=0.499)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", choices=("islands", "tiled"), default="islands",
                    help="islands: CMU crops on glass at --tissue-fraction; tiled: CMU mirrored over\n"
                         "the whole slide (keep such slides small: ~4096)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--precision", choices=("auto", "int8"), default="auto",
                    help="infer.precision (int8: the checkpoint's int8 network, model.quantize)")
    ap.add_argument("--run-one", nargs=3, metavar=("SLIDE", "OUT", "CKPT"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.run_one:
        slide, out, ckpt = map(Path, args.run_one)
        print(json.dumps(run_one(slide, out, ckpt, args.threads, args.precision)))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="wsi_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.random_compact:
        ckpt = _random_compact_checkpoint(work / "random_compact.pt")
    elif args.checkpoint:
        ckpt = args.checkpoint
    else:
        from wsi_pipeline.model import default_checkpoint_path

        ckpt = default_checkpoint_path()
    results = []
    for size in args.sizes:
        slide = work / f"{args.layout}_{size}.tif"
        t0 = time.perf_counter()
        if args.layout == "tiled":
            info = build_tiled_slide(slide, size, args.mpp)
        else:
            info = build_slide(slide, size, args.mpp, args.tissue_fraction, args.island, seed=size)
        build_s = time.perf_counter() - t0
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(
            [sys.executable, __file__, "--threads", str(args.threads), "--precision", args.precision,
             "--run-one", str(slide),
             str(work / "out"), str(ckpt)],
            capture_output=True, text=True, env=env, check=False,
        )
        if proc.returncode:
            sys.exit(f"run on {slide.name} failed:\n{proc.stderr[-4000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res.update(size=size, build_seconds=round(build_s, 1), **info)
        mm2 = max(res["tissue_mm2"], 1e-9)
        sec = res["seconds"]
        sec["end_to_end"] = round(sec["prepare"] + sec["infer_wall"] + sec["postproc"] + sec["export"], 2)
        res["seconds_per_mm2"] = {k: round(v / mm2, 2) for k, v in sec.items()}
        res["engine_to_network"] = round(res["engine_ms_per_run"] / res["network_ms_per_tile"], 3)
        results.append(res)
        print(json.dumps(res), flush=True)

    print(f"\n{'size':>7} {'tissue mm2':>10} {'nuclei':>8} " + " ".join(
        f"{k + ' s/mm2':>16}" for k in results[0]["seconds_per_mm2"]) + f" {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['size']:>7} {r['tissue_mm2']:>10.2f} {r['n_nuclei']:>8} " + " ".join(
            f"{v:>16.2f}" for v in r["seconds_per_mm2"].values()) + f" {r['peak_rss_mb']:>12.0f}")
    if len(results) > 1:
        lo, hi = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
        print(f"peak RSS ratio largest/smallest: {hi / lo:.2f}")
    for r in results:
        print(f"{r['size']}: engine {r['engine_ms_per_run']} ms per tile run / network alone "
              f"{r['network_ms_per_tile']} ms per tile = {r['engine_to_network']:.2f}")
    print(f"# {_cpu_line()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
