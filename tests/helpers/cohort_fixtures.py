"""Builders for cohort tests: small pyramidal TIFFs cut from the real CMU slide, broken inputs,
and a tiny random checkpoint (fast on CPU, deterministic)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CMU = "slides/CMU-1-Small-Region.svs"
#: Level-0 (x, y) of crops inside the CMU slide's tissue (epidermis: many nuclei).
CMU_CROPS = {"cmu_a": (900, 1000), "cmu_b": (1100, 1700)}
CROP = 512
MPP = 0.499


def write_pyramid_tiff(path: Path, rgb: np.ndarray, mpp: float) -> Path:
    """A tiled, two-level, JPEG-compressed TIFF that OpenSlide opens as generic-tiff with mpp."""
    import tifffile

    res = 1e4 / mpp
    with tifffile.TiffWriter(path) as tw:
        for level, img in enumerate((rgb, rgb[::2, ::2])):
            tw.write(np.ascontiguousarray(img), tile=(256, 256), photometric="rgb", compression="jpeg",
                     resolution=(res / 2**level, res / 2**level), resolutionunit="CENTIMETER",
                     subfiletype=1 if level else 0)
    return path


def cmu_crop(shared_data: Path, x: int, y: int, size: int = CROP) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(shared_data / CMU)) as s:
        return np.asarray(s.read_region((x, y), 0, (size, size)).convert("RGB"))


def make_cohort(shared_data: Path, folder: Path, broken: bool = False, blank: bool = False) -> Path:
    """Two tissue crops of CMU (+ optionally broken inputs and a tissue-free slide)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in CMU_CROPS.items():
        write_pyramid_tiff(folder / f"{name}.tif", cmu_crop(shared_data, x, y), MPP)
    if blank:
        rng = np.random.default_rng(0)
        glass = (238 + rng.integers(-3, 4, size=(CROP, CROP, 3))).astype(np.uint8)
        write_pyramid_tiff(folder / "blank.tif", glass, MPP)
    if broken:
        svs = (shared_data / CMU).read_bytes()
        (folder / "truncated.svs").write_bytes(svs[: len(svs) // 3])
        (folder / "text.svs").write_text("this is not a slide\n")
        (folder / "empty.svs").write_bytes(b"")
    return folder


def tiny_checkpoint(path: Path, fit_rgb: np.ndarray | None = None, mpp: float = 0.5,
                    seed: int = 0) -> Path:
    """A random resnet18/width-8 network. With `fit_rgb`, its NS head is refitted (least
    squares, one 1x1 conv) so that dark haematoxylin blobs read as nuclei: a random network is
    near-constant and would give one slide-sized "nucleus", which tests nothing downstream."""
    import torch

    from wsi_pipeline.model import ModelConfig, MultiTaskNet, save_checkpoint

    torch.manual_seed(seed)
    net = MultiTaskNet.from_config(ModelConfig(n_types=5, encoder="resnet18", width=8)).eval()
    if fit_rgb is not None:
        _fit_ns_head(net, fit_rgb)
    save_checkpoint(path, net, class_names=("background", "inflammatory", "epithelial", "stromal", "other"),
                    mpp=mpp)
    return path


def cmu_cohort(shared_data: Path, root: Path) -> tuple[Path, Path]:
    """`make_cohort`'s slides under root/slides and a tiny checkpoint fitted on one of them."""
    make_cohort(shared_data, root / "slides")
    return root, tiny_checkpoint(root / "tiny.pt", fit_rgb=cmu_crop(shared_data, *CMU_CROPS["cmu_a"]))


def _fit_ns_head(net, rgb: np.ndarray, side: int = 256) -> None:
    import torch

    head = net.decoders["ns"].head
    feats: list = []
    hook = head.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach()))
    tiles = [rgb[r:r + side, c:c + side] for r in (0, rgb.shape[0] - side) for c in (0, rgb.shape[1] - side)]
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        net(x)
    hook.remove()
    f = feats[0].permute(0, 2, 3, 1).reshape(-1, feats[0].shape[1]).double()
    grey = x.mean(1).reshape(-1).double()
    target = torch.where(grey < torch.quantile(grey, 0.12), 4.0, -4.0).double()
    design = torch.cat([f, torch.ones(len(f), 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(design, target[:, None]).solution[:, 0].float()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1, :, 0, 0] = coef[:-1]
        head.bias[1] = coef[-1]


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """`wsi-pipeline ARGS` in its own process group (so the test can kill all it started)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-c", "from wsi_pipeline.cli import main; main()", *args]
    return subprocess.Popen(cmd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def run_cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    p = cli(*args, **kw)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        kill_group(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out, None)


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the process group the test started (the run and its cluster workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return False


TIMING_COLUMNS = ("infer_s", "postproc_s", "export_s")


def result_tables(out: Path) -> dict:
    """Everything a user reads from a run, minus timings: for comparing two runs."""
    import pandas as pd

    manifest = pd.read_parquet(out / "manifest.parquet").drop(columns=list(TIMING_COLUMNS))
    tables = {"manifest": manifest.sort_values("slide_id").reset_index(drop=True),
              "summary": pd.read_parquet(out / "cohort_summary.parquet")}
    for slide_id in manifest.loc[manifest["status"].isin(["done", "no_tissue"]), "slide_id"]:
        tables[slide_id] = pd.read_parquet(out / slide_id / "nuclei.parquet")
    return tables


def assert_same_tables(a: dict, b: dict) -> None:
    import pandas as pd

    assert sorted(a) == sorted(b)
    for name, table in a.items():
        pd.testing.assert_frame_equal(table, b[name], obj=name)
