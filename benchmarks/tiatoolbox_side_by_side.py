"""wsi-pipeline against TIAToolbox's HoVer-Net (fast) on the same slide region, in one invocation.

    python benchmarks/tiatoolbox_side_by_side.py --tia-python /work/tiavenv/bin/python \\
        [--size 1024] [--threads 2] [--json results.json]

One after the other, on the same crop of ../shared/data/slides/CMU-1-Small-Region.svs (20×,
0.499 µm/px; `--size` level-0 px square, centred unless `--x/--y`), written once as a small
pyramidal tiled TIFF (3 levels, JPEG tiles, resolution tags) that both tools open:

(a) `wsi-pipeline run REGION -o OUT` with the shipped weights and the default settings (0.25 µm/px,
    the model's pixel size; precision `auto`, i.e. bf16 where the CPU has native bf16, else fp32;
    back end `auto`, OpenVINO on the CPU where installed; `--wsi-precision` / `--wsi-backend`
    change them; the back end and precision that ran are read from maps.zarr), in this Python,
    through the click entry point in a subprocess; the engine's forward passes are timed by
    wrapping `wsi_pipeline.model.predictors.Predictor.predict_compact` (the method the engine
    calls, unchanged); the first batch, which includes OpenVINO's compilation, is also given apart.
(b) TIAToolbox 2.1.3 `MultiTaskSegmentor` (the 2.1 API; `NucleusInstanceSegmentor` is its
    deprecated alias) with `HoVerNet(num_types=6, mode="fast")` and the ioconfig of TIAToolbox's
    own `hovernet_fast-pannuke` entry: input and output at 0.25 µm/px, 256² input patches, 164²
    output patches, stride 164, tile 1024², margin 128; `patch_mode=False` (WSI mode, its default
    tissue mask), `output_type="annotationstore"` (an SQLite store of nuclei), batch 8, fp32 (what
    its `infer_batch` runs), in the TIAToolbox venv (`--tia-python`) in a subprocess.

**TIAToolbox's weights cannot be downloaded here (no model hub), so HoVer-Net runs with random
weights**, seeded: PyTorch's default initialisation of every conv, then the BatchNorm running
statistics recalibrated on one batch of 4 patches of the region (so activations have a trained
network's scale: no overflow, no denormals, which would distort the timing). The whole network
runs on every patch (its forward pass is what is timed as the model). Random maps are noise, and
post-processing noise costs what no real slide does, so **after the forward pass the NP and HV
outputs are replaced by stand-in maps derived from the patch itself**: NP = 0.95 where the
smoothed red channel of the 164² output area is below a threshold (Otsu over the region's pixels
darker than glass, computed before the run; hematoxylin-stained nuclei are dark and blue, low in
red) and 0.05 elsewhere; HV = each connected blob's horizontal/vertical distance to its centre,
scaled to [-1, 1] (HoVer-Net's own training target). The type head keeps the random network's
output. TIAToolbox's own post-processing (watershed, instance info, tile merging, the store) then
runs on nucleus-like maps; both tools' nucleus counts are printed. Building the stand-ins is timed
apart (`standin_s`) and is not counted as model time; it is counted in TIAToolbox's end-to-end time
(it takes well under 1 % of it).

Printed: each tool's end-to-end wall time (the tool's entry point, from its call to its return,
imports excluded; the subprocess' wall time too), model time (forward passes), tiles / patches run,
nuclei, the ratio of end-to-end times, and the ratio at equal model FLOPs: each model's forward FLOPs
per tile / patch are counted with `torch.utils.flop_counter.FlopCounterMode` in its own venv, and
ratio_equal_flops = (t_tia / t_wsi) / (FLOPs_tia / FLOPs_wsi), FLOPs = per patch × patches run (> 1:
wsi-pipeline faster per FLOP). Also the CPU model, its flags that matter (avx2, avx512f, avx512_bf16,
amx_bf16, avx512_vnni), the torch versions and the precision each used. `--json` saves it all.

The TIAToolbox venv (tiatoolbox 2.1.3 pins torch < 2.13; this repo uses 2.13): PyPI's only torch
2.9.1 wheel for Linux x86_64 is the CUDA 12.8 build (900 MB) and it will not import without its
nvidia-* wheels (`libcublas.so.*[0-9] not found`), so the venv takes about 8.5 GB on disk whether or
not a GPU is used (4 minutes to install here); a CPU-only build is not on PyPI. Without a GPU it runs
on the CPU:

    python3.11 -m venv /work/tiavenv
    /work/tiavenv/bin/pip install tiatoolbox==2.1.3 torch==2.9.1 torchvision==0.24.1
    /work/tiavenv/bin/pip install pysqlite3-binary  # only where Python's sqlite3 lacks extensions

TIAToolbox's annotation store needs sqlite3's extension loading, which a Python built without it
(pyenv's default build, as here) lacks; the worker then swaps in pysqlite3 for sqlite3.
(`python benchmarks/tiatoolbox_side_by_side.py --print-venv-recipe` prints these lines.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CMU = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
SLIDE_MPP = 0.499
MODEL_MPP = 0.25
FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni")
VENV_RECIPE = (
    "python3.11 -m venv /work/tiavenv\n"
    "/work/tiavenv/bin/pip install tiatoolbox==2.1.3 torch==2.9.1 torchvision==0.24.1\n"
    "/work/tiavenv/bin/pip install pysqlite3-binary  # only where Python's sqlite3 lacks extensions\n"
)
# TIAToolbox's hovernet_fast-pannuke ioconfig (tiatoolbox/data/pretrained_model.yaml, 2.1.3)
TIA_IOCONFIG = {
    "input_resolutions": [{"units": "mpp", "resolution": MODEL_MPP}],
    "output_resolutions": [{"units": "mpp", "resolution": MODEL_MPP}] * 3,
    "margin": 128,
    "tile_shape": [1024, 1024],
    "patch_input_shape": [256, 256],
    "patch_output_shape": [164, 164],
    "stride_shape": [164, 164],
    "save_resolution": {"units": "mpp", "resolution": MODEL_MPP},
}
TIA_BATCH = 8


# ---------------------------------------------------------------- pure helpers (tested)
def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """CPU model name and which of FLAGS_THAT_MATTER it has (x86 /proc/cpuinfo; empty elsewhere)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"model": model, "cores": os.cpu_count(),
            "flags": {f: f in flags for f in FLAGS_THAT_MATTER}}


def crop_origin(width: int, height: int, size: int, x: int | None = None,
                y: int | None = None) -> tuple[int, int]:
    """Top-left corner of a `size`² crop of a width×height image: centred where x/y are None,
    clipped to the image; a crop larger than the image is an error."""
    if size > width or size > height:
        raise ValueError(f"--size {size} does not fit in the {width} x {height} slide")
    x = (width - size) // 2 if x is None else x
    y = (height - size) // 2 if y is None else y
    return min(max(int(x), 0), width - size), min(max(int(y), 0), height - size)


def ratios(wsi: dict, tia: dict) -> dict:
    """Speed ratios (> 1: wsi-pipeline faster) from each tool's seconds, runs and FLOPs per run.

    `end_to_end`: t_tia / t_wsi. `equal_flops`: the same divided by the ratio of the FLOPs each
    actually ran (per tile × tiles): how much faster wsi-pipeline would be if both ran models of
    equal cost. `model` / `model_equal_flops`: the same over the forward passes alone.
    GFLOP/s = FLOPs run / model seconds."""

    def flops(r: dict) -> float:
        return float(r["flops_per_run"]) * float(r["runs"])

    out = {"end_to_end": tia["end_to_end_s"] / wsi["end_to_end_s"]}
    f = flops(tia) / flops(wsi)
    out["flops"] = f
    out["equal_flops"] = out["end_to_end"] / f
    if wsi.get("model_s") and tia.get("model_s"):
        out["model"] = tia["model_s"] / wsi["model_s"]
        out["model_equal_flops"] = out["model"] / f
        out["gflops_per_s"] = {"wsi": flops(wsi) / wsi["model_s"] / 1e9,
                               "tia": flops(tia) / tia["model_s"] / 1e9}
    return out


def hv_targets(labels: np.ndarray) -> np.ndarray:
    """HoVer-Net's HV target of a label image: (H, W, 2) float32, per blob the x (channel 0) and y
    distance of each pixel to the blob's centre of mass, divided by the blob's largest |distance|
    on that axis (so [-1, 1]); 0 on background. Vectorised with scipy.ndimage."""
    from scipy import ndimage

    h, w = labels.shape
    out = np.zeros((h, w, 2), np.float32)
    n = int(labels.max())
    if n == 0:
        return out
    idx = np.arange(1, n + 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fg = labels > 0
    for ch, grid in ((0, xx), (1, yy)):
        centre = np.zeros(n + 1, np.float32)
        centre[1:] = ndimage.mean(grid, labels, idx)
        d = np.where(fg, grid - centre[labels], 0.0)
        scale = np.ones(n + 1, np.float32)
        scale[1:] = np.maximum(ndimage.maximum(np.abs(d), labels, idx), 1.0)
        out[..., ch] = d / scale[labels]
    return out


def standin_maps(rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus-like NP and HV maps of one (H, W, 3) uint8 image: NP (H, W, 1) = 0.95 where the
    red channel smoothed by a 1 px Gaussian is below `threshold`, else 0.05; HV from the
    connected blobs of that mask (`hv_targets`)."""
    from scipy import ndimage

    red = ndimage.gaussian_filter(rgb[..., 0].astype(np.float32), 1.0)
    fg = red < threshold
    labels, _ = ndimage.label(fg)
    np_map = np.where(fg, 0.95, 0.05).astype(np.float32)[..., None]
    return np_map, hv_targets(labels)


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of uint8-range values (256 bins), numpy only."""
    hist = np.bincount(np.clip(values.astype(np.int64), 0, 255).ravel(), minlength=256).astype(float)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * np.arange(256))
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] - m) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(np.argmax(between[:-1]) + 0.5)


# ---------------------------------------------------------------- the region
def write_region(path: Path, size: int, x: int | None = None, y: int | None = None) -> dict:
    """Crop CMU-1-Small-Region to `size`² level-0 px and write it as a pyramidal tiled TIFF
    (levels 1, 1/2, 1/4 where ≥ 64 px; JPEG q95 256² tiles; 0.499 µm/px in the resolution tags)."""
    import openslide
    import tifffile
    from PIL import Image

    with openslide.OpenSlide(str(CMU)) as s:
        x0, y0 = crop_origin(*s.dimensions, size, x, y)
        rgb = np.asarray(s.read_region((x0, y0), 0, (size, size)).convert("RGB"))
    res = 1e4 / SLIDE_MPP
    downs = [d for d in (1, 2, 4) if size // d >= 64]
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for i, d in enumerate(downs):
            img = rgb if d == 1 else np.asarray(
                Image.fromarray(rgb).resize((size // d, size // d), Image.Resampling.BOX))
            tif.write(img, tile=(256, 256), compression="jpeg", compressionargs={"level": 95},
                      photometric="rgb", resolution=(res, res), resolutionunit="CENTIMETER",
                      subfiletype=1 if i else 0, metadata=None)
    dark = rgb[rgb.min(axis=2) < 200]  # not glass
    return {"path": str(path), "x": x0, "y": y0, "size": size, "mpp": SLIDE_MPP, "levels": downs,
            "mm2": (size * SLIDE_MPP / 1e3) ** 2,
            "red_threshold": otsu(dark[:, 0]) if dark.size else 128.0}


# ---------------------------------------------------------------- (a) wsi-pipeline worker
def wsi_worker(region: Path, out: Path, threads: int, precision: str, backend: str | None) -> dict:
    """`wsi-pipeline run` through its click entry point, forward passes timed; in this process."""
    t_import = time.perf_counter()
    import pyarrow.parquet as pq
    import torch
    import zarr
    from torch.utils.flop_counter import FlopCounterMode

    from wsi_pipeline.cli import main as cli_main
    from wsi_pipeline.inference.config import DEFAULT_TILE_SIZE
    from wsi_pipeline.model import default_checkpoint_path, load_checkpoint
    from wsi_pipeline.model.predictors import Predictor
    from wsi_pipeline.model.runtime import choose_runtime

    torch.set_num_threads(threads)
    t_import = time.perf_counter() - t_import
    stats = {"model_s": 0.0, "runs": 0, "batches": 0, "shape": None, "first_batch_s": None}
    inner = Predictor.predict_compact

    def timed(predictor, batch):  # noqa: ANN001, ANN202 - a transparent wrapper
        t0 = time.perf_counter()
        res = inner(predictor, batch)
        dt = time.perf_counter() - t0
        stats["model_s"] += dt
        if stats["first_batch_s"] is None:  # includes OpenVINO's compile / oneDNN's warm-up
            stats["first_batch_s"], stats["first_batch_runs"] = dt, int(batch.shape[0])
        stats["runs"] += int(batch.shape[0])
        stats["batches"] += 1
        stats["shape"] = list(batch.shape[1:3])
        return res

    Predictor.predict_compact = timed  # type: ignore[method-assign]
    args = ["run", str(region), "-o", str(out), "--device", "cpu"]
    infer_keys = {"precision": precision if precision != "auto" else None, "backend": backend}
    if any(infer_keys.values()):
        cfg = out.parent / "wsi_config.yaml"
        cfg.write_text("infer:\n" + "".join(f"  {k}: {v}\n" for k, v in infer_keys.items() if v))
        args += ["--config", str(cfg)]
    t0 = time.perf_counter()
    try:
        cli_main.main(args, standalone_mode=False)
    finally:
        Predictor.predict_compact = inner  # type: ignore[method-assign]
    end_to_end = time.perf_counter() - t0

    row = pq.read_table(out / "manifest.parquet").to_pylist()[0]
    if row["status"] == "no_tissue":
        raise RuntimeError("wsi-pipeline found no tissue in the region: below about 350² px a crop "
                           "is smaller than its smallest tissue piece (infer.tissue.min_object_um2, "
                           "20,000 µm²); use --size 384 or more")
    if row["status"] != "done":
        raise RuntimeError(f"wsi-pipeline run ended {row['status']}: {row.get('error')}")
    ckpt = default_checkpoint_path()
    model = load_checkpoint(ckpt)
    side = stats["shape"] or [DEFAULT_TILE_SIZE, DEFAULT_TILE_SIZE]  # (no tile ran: not reached)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.net.eval()(torch.rand(1, 3, *side))
    amp = choose_runtime("cpu", precision, backend or "auto").float_dtype
    ran = {"backend": "torch", "precision": "fp32" if amp is None else str(amp).removeprefix("torch.")}
    for maps in out.glob("*/maps.zarr"):  # what the engine recorded it ran (newer versions)
        ran.update(zarr.open_group(str(maps), mode="r").attrs.get("backend") or {})
    return {
        "tool": "wsi-pipeline run", "torch": torch.__version__, "threads": threads,
        "precision": f"{precision} -> {ran['precision']}", "backend": ran["backend"],
        "backend_version": ran.get("version", torch.__version__),
        "import_s": t_import, "end_to_end_s": end_to_end, "model_s": stats["model_s"],
        "first_batch_s": stats["first_batch_s"], "first_batch_runs": stats.get("first_batch_runs"),
        "stages_s": {s: row.get(f"{s}_s") for s in ("infer", "postproc", "export")},
        "tiles": row["n_tiles"], "runs": stats["runs"], "tile_px": side, "nuclei": row["n_nuclei"],
        "tissue_mm2": row["tissue_mm2"], "slide_mpp": row["mpp"], "model_mpp": model.mpp,
        "flops_per_run": fc.get_total_flops(), "checkpoint_sha256": model.sha256,
    }


# ---------------------------------------------------------------- (b) TIAToolbox worker
def tia_worker(region: Path, out: Path, threads: int, red_threshold: float, seed: int) -> dict:
    """TIAToolbox's MultiTaskSegmentor + HoVer-Net fast (random weights, stand-in NP/HV maps)."""
    t_import = time.perf_counter()
    _sqlite_with_extensions()
    import tiatoolbox
    import torch
    from tiatoolbox.models.architecture.hovernet import HoVerNet
    from tiatoolbox.models.engine.io_config import IOInstanceSegmentorConfig
    from tiatoolbox.models.engine.multi_task_segmentor import MultiTaskSegmentor
    from tiatoolbox.wsicore.wsireader import WSIReader
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    t_import = time.perf_counter() - t_import
    stats = {"model_s": 0.0, "standin_s": 0.0, "runs": 0, "calls": 0, "first_call_runs": 0}
    crop = (TIA_IOCONFIG["patch_input_shape"][0] - TIA_IOCONFIG["patch_output_shape"][0]) // 2

    class BenchHoVerNet(HoVerNet):
        """HoVer-Net whose NP/HV outputs are replaced after the full forward (module docstring)."""

        @staticmethod
        def infer_batch(model, batch_data, *, device):  # noqa: ANN001, ANN205
            t0 = time.perf_counter()
            np_map, hv_map, tp_map = HoVerNet.infer_batch(model, batch_data, device=device)
            t1 = time.perf_counter()
            imgs = np.asarray(batch_data)[:, crop:-crop, crop:-crop].astype(np.uint8)
            pairs = [standin_maps(im, red_threshold) for im in imgs]
            np_map = np.stack([p[0] for p in pairs]).astype(np_map.dtype)
            hv_map = np.stack([p[1] for p in pairs]).astype(hv_map.dtype)
            stats["standin_s"] += time.perf_counter() - t1
            stats["calls"] += 1
            if stats["calls"] == 1:  # the engine's own probe call on the first patch
                stats["first_call_runs"] = len(imgs)
                stats["first_call_s"] = t1 - t0
            else:
                stats["model_s"] += t1 - t0
                stats["runs"] += len(imgs)
            return np_map, hv_map, tp_map

    torch.manual_seed(seed)
    names = {0: "Background", 1: "Neoplastic", 2: "Inflammatory", 3: "Connective", 4: "Dead",
             5: "Non-Neoplastic Epithelial"}
    net = BenchHoVerNet(num_types=6, mode="fast", nuc_type_dict=names)
    reader = WSIReader.open(region, mpp=(SLIDE_MPP, SLIDE_MPP))
    t_cal = time.perf_counter()
    _recalibrate_bn(net, reader, torch)
    t_cal = time.perf_counter() - t_cal
    ioconfig = IOInstanceSegmentorConfig(**TIA_IOCONFIG)

    stages = {"infer_wsi": 0.0, "post_process_wsi": 0.0, "save_predictions": 0.0}

    class TimedSegmentor(MultiTaskSegmentor):
        """MultiTaskSegmentor with its three WSI stages timed (each calls the parent's)."""

        def infer_wsi(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            return _timed(stages, "infer_wsi", super().infer_wsi, a, k)

        def post_process_wsi(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            return _timed(stages, "post_process_wsi", super().post_process_wsi, a, k)

        def save_predictions(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            return _timed(stages, "save_predictions", super().save_predictions, a, k)

    t0 = time.perf_counter()
    engine = TimedSegmentor(model=net, batch_size=TIA_BATCH, num_workers=0, device="cpu",
                            verbose=False)
    result = engine.run([reader], patch_mode=False, ioconfig=ioconfig, save_dir=out,
                        output_type="annotationstore", device="cpu", overwrite=True)
    end_to_end = time.perf_counter() - t0

    outputs = _paths(result)
    n_nuclei = sum(_count_store(p) for p in outputs)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net.eval()(torch.rand(1, 3, *TIA_IOCONFIG["patch_input_shape"]) * 255)
    return {
        "tool": "TIAToolbox MultiTaskSegmentor, HoVer-Net fast", "tiatoolbox": tiatoolbox.__version__,
        "torch": torch.__version__, "threads": threads, "precision": "fp32 (infer_batch casts to float32)",
        "import_s": t_import, "bn_recalibration_s": t_cal, "end_to_end_s": end_to_end,
        "model_s": stats["model_s"], "standin_s": stats["standin_s"], "stages_s": stages,
        "probe_call_s": stats.get("first_call_s"), "runs": stats["runs"],
        "patch_px": TIA_IOCONFIG["patch_input_shape"], "output_px": TIA_IOCONFIG["patch_output_shape"],
        "nuclei": n_nuclei, "flops_per_run": fc.get_total_flops(), "red_threshold": red_threshold,
        "seed": seed, "outputs": [str(p) for p in outputs],
    }


def _timed(acc: dict, key: str, fn, args: tuple, kwargs: dict):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        acc[key] += time.perf_counter() - t0


def _sqlite_with_extensions() -> None:
    """TIAToolbox's SQLiteStore calls Connection.enable_load_extension, which a Python built
    without loadable sqlite extensions (pyenv's default) lacks: use pysqlite3 there (the venv
    recipe installs pysqlite3-binary)."""
    import sqlite3

    if hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        return
    try:
        import pysqlite3
        import pysqlite3.dbapi2
    except ImportError:
        sys.exit("this Python's sqlite3 cannot load extensions (TIAToolbox's annotation store "
                 "needs it): pip install pysqlite3-binary into the TIAToolbox venv")
    sys.modules["sqlite3"] = pysqlite3
    sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2


def _recalibrate_bn(net, reader, torch) -> None:  # noqa: ANN001 - torch passed in, venv-local
    """BatchNorm running statistics from one batch of 4 patches of the region (train-mode forward,
    cumulative average); the conv weights stay random."""
    w, h = reader.slide_dimensions(resolution=MODEL_MPP, units="mpp")
    side = TIA_IOCONFIG["patch_input_shape"][0]
    xs = np.linspace(0, max(w - side, 0), 2).astype(int)
    ys = np.linspace(0, max(h - side, 0), 2).astype(int)
    patches = [reader.read_rect((int(x), int(y)), (side, side), resolution=MODEL_MPP, units="mpp",
                                coord_space="resolution")[..., :3] for y in ys for x in xs]
    batch = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()


def _paths(result: object) -> list[Path]:
    """The output paths in what `run` returned (a path, or a dict/list of paths or lists)."""
    if isinstance(result, dict):
        return [p for v in result.values() for p in _paths(v)]
    if isinstance(result, list | tuple):
        return [p for v in result for p in _paths(v)]
    return [Path(result)]


def _count_store(path: Path) -> int:
    """Nuclei in TIAToolbox's output: an SQLite annotation store, or a folder/zarr of them."""
    from tiatoolbox.annotation.storage import SQLiteStore

    if path.is_dir():
        return sum(_count_store(p) for p in sorted(path.glob("*.db")))
    if path.suffix == ".db":
        store = SQLiteStore(path)
        try:
            return len(store)
        finally:
            store.close()
    raise RuntimeError(f"unexpected TIAToolbox output {path}")


# ---------------------------------------------------------------- driver
def _subprocess(python: str, args: list[str], threads: int) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.run([python, __file__, *args], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(args[:1])} failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]), wall


def report(res: dict) -> str:
    """The human-readable table of a results dict (as --json writes it)."""
    w, t, r, c = res["wsi"], res["tia"], res["ratios"], res["cpu"]
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in c["flags"].items())
    reg = res["region"]
    lines = [
        f"CPU: {c['model']}, {c['cores']} cores, {res['threads']} torch threads each; {flags}",
        f"region: {reg['size']}² level-0 px of CMU-1-Small-Region at ({reg['x']}, {reg['y']}), "
        f"{reg['mpp']} µm/px, {reg['mm2']:.3f} mm², processed at {MODEL_MPP} µm/px",
        "",
        f"{'':<44} {'wsi-pipeline':>18} {'TIAToolbox':>18}",
        f"{'torch':<44} {w['torch']:>18} {t['torch']:>18}",
        f"{'back end':<44} {w.get('backend', 'torch'):>18} {'torch':>18}",
        f"{'precision':<44} {w['precision']:>18} {'fp32':>18}",
        f"{'end to end s (entry point call to return)':<44} {w['end_to_end_s']:>18.1f} "
        f"{t['end_to_end_s']:>18.1f}",
        f"{'process wall s (with imports, FLOP count)':<44} {w['process_s']:>18.1f} {t['process_s']:>18.1f}",
        f"{'model s (forward passes)':<44} {w['model_s']:>18.1f} {t['model_s']:>18.1f}",
        f"{'first batch s (wsi) / probe call s (TIA)':<44} {w.get('first_batch_s') or 0:>18.1f} "
        f"{t['probe_call_s'] or 0:>18.1f}",
        f"{'tiles / patches run':<44} {w['runs']:>18} {t['runs']:>18}",
        f"{'input px per tile / patch':<44} {'x'.join(map(str, w['tile_px'])):>18} "
        f"{'x'.join(map(str, t['patch_px'])):>18}",
        f"{'model ms per tile / patch':<44} {1e3 * w['model_s'] / max(w['runs'], 1):>18.1f} "
        f"{1e3 * t['model_s'] / max(t['runs'], 1):>18.1f}",
        f"{'  the same after the first batch':<44} {_after_first(w):>18} {_after_first(t):>18}",
        f"{'GFLOP per tile / patch (forward)':<44} {w['flops_per_run'] / 1e9:>18.2f} "
        f"{t['flops_per_run'] / 1e9:>18.2f}",
        f"{'nuclei':<44} {w['nuclei']:>18} {t['nuclei']:>18}",
    ]
    if "gflops_per_s" in r:
        lines.append(f"{'GFLOP/s over the forward passes':<44} {r['gflops_per_s']['wsi']:>18.1f} "
                     f"{r['gflops_per_s']['tia']:>18.1f}")
    stages_w = ", ".join(f"{k} {v:.1f}" for k, v in w["stages_s"].items() if v is not None)
    stages_t = ", ".join(f"{k} {v:.1f}" for k, v in t["stages_s"].items())
    lines += [
        f"stages s: wsi-pipeline {stages_w} (manifest); TIAToolbox {stages_t} (its infer_wsi includes "
        f"a {t['probe_call_s'] or 0:.1f} s probe call on the first patch, not in its model time)",
        "",
        f"end to end: TIAToolbox / wsi-pipeline = {r['end_to_end']:.2f}x",
        f"FLOPs run: TIAToolbox / wsi-pipeline = {r['flops']:.2f}x",
        f"at equal model FLOPs (end-to-end ratio / FLOP ratio) = {r['equal_flops']:.2f}x",
    ]
    if "model" in r:
        lines.append(f"model time alone: {r['model']:.2f}x, at equal FLOPs {r['model_equal_flops']:.2f}x")
    if not w["precision"].endswith("fp32"):
        lines.append(f"(wsi-pipeline ran {w['precision'].split()[-1]}, TIAToolbox fp32: the ratios at equal "
                     "FLOPs include that; --wsi-precision fp32 compares like with like)")
    lines += [
        "",
        "TIAToolbox ran HoVer-Net fast with RANDOM weights (no pretrained weights can be downloaded "
        "here); the full network ran on every patch, then its NP/HV outputs were replaced by "
        f"stand-in maps from the patch's dark (red < {t['red_threshold']:.0f}) blobs so that its "
        f"post-processing sees nucleus-like maps (stand-ins took {t['standin_s']:.1f} s, inside its "
        "end-to-end time, outside its model time). wsi-pipeline ran its shipped weights.",
    ]
    return "\n".join(lines)


def _after_first(r: dict) -> str:
    """Model ms per tile without the first batch (OpenVINO compiles there); TIAToolbox's probe
    call is outside its model time already."""
    if "probe_call_s" in r:
        return f"{1e3 * r['model_s'] / max(r['runs'], 1):.1f}"
    n = r["runs"] - (r.get("first_batch_runs") or 0)
    if not r.get("first_batch_s") or n <= 0:
        return "n/a"
    return f"{1e3 * (r['model_s'] - r['first_batch_s']) / n:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tia-python", default="/work/tiavenv/bin/python",
                    help="Python of the TIAToolbox venv (see the recipe above)")
    ap.add_argument("--size", type=int, default=1024, help="region side, level-0 px (default 1024)")
    ap.add_argument("--x", type=int, default=None, help="region left, level-0 px (default: centred)")
    ap.add_argument("--y", type=int, default=None, help="region top, level-0 px (default: centred)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads for each tool (default: all cores)")
    ap.add_argument("--wsi-precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="wsi-pipeline's infer.precision (default auto, its default setting)")
    ap.add_argument("--wsi-backend", default=None, choices=("auto", "torch", "openvino"),
                    help="wsi-pipeline's infer.backend (default: its default setting)")
    ap.add_argument("--seed", type=int, default=0, help="seed of HoVer-Net's random weights")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--print-venv-recipe", action="store_true", help="print the venv recipe and exit")
    ap.add_argument("--wsi-worker", nargs=2, metavar=("REGION", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--tia-worker", nargs=3, metavar=("REGION", "OUT", "RED"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.print_venv_recipe:
        print(VENV_RECIPE, end="")
        return
    if args.wsi_worker:
        region, out = map(Path, args.wsi_worker)
        print(json.dumps(wsi_worker(region, out, args.threads, args.wsi_precision, args.wsi_backend)))
        return
    if args.tia_worker:
        region, out, red = args.tia_worker
        print(json.dumps(tia_worker(Path(region), Path(out), args.threads, float(red), args.seed)))
        return

    if not Path(args.tia_python).exists():
        sys.exit(f"{args.tia_python} not found; create the TIAToolbox venv first:\n{VENV_RECIPE}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tia_side_by_side_"))
    work.mkdir(parents=True, exist_ok=True)
    region = write_region(work / f"cmu_region_{args.size}.tif", args.size, args.x, args.y)
    print(f"region {region['path']} ({region['size']}² px at ({region['x']}, {region['y']}))", flush=True)
    common = ["--threads", str(args.threads), "--seed", str(args.seed)]
    res = {"cpu": cpu_info(), "threads": args.threads, "region": region, "python": sys.version.split()[0]}
    print("(a) wsi-pipeline run ...", flush=True)
    backend = ["--wsi-backend", args.wsi_backend] if args.wsi_backend else []
    wsi, wall = _subprocess(sys.executable, [*common, "--wsi-precision", args.wsi_precision, *backend,
                                             "--wsi-worker", region["path"], str(work / "wsi_out")],
                            args.threads)
    res["wsi"] = {**wsi, "process_s": wall}
    print(f"    {wsi['end_to_end_s']:.1f} s end to end, {wsi['nuclei']} nuclei", flush=True)
    print("(b) TIAToolbox MultiTaskSegmentor, HoVer-Net fast ...", flush=True)
    tia, wall = _subprocess(args.tia_python, [*common, "--tia-worker", region["path"],
                                              str(work / "tia_out"), str(region["red_threshold"])],
                            args.threads)
    res["tia"] = {**tia, "process_s": wall}
    print(f"    {tia['end_to_end_s']:.1f} s end to end, {tia['nuclei']} nuclei", flush=True)
    res["ratios"] = ratios(res["wsi"], res["tia"])
    print()
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
