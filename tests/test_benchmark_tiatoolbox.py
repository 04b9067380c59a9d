"""Pure helpers of benchmarks/tiatoolbox_side_by_side.py and benchmarks/gpu_check.py (no venv, no
TIAToolbox, no GPU): crop placement, the speed/FLOP ratios, the stand-in HV maps, CPU flags,
the region writer, and gpu_check's sweep, utilisation window and time reading."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
CMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"


def _load(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


side = _load("tiatoolbox_side_by_side")
gpu = _load("gpu_check")


def test_crop_origin_centres_and_clips():
    assert side.crop_origin(2220, 2967, 1024) == (598, 971)
    assert side.crop_origin(2220, 2967, 1024, x=5000, y=-3) == (2220 - 1024, 0)
    assert side.crop_origin(100, 100, 100) == (0, 0)
    with pytest.raises(ValueError, match="does not fit"):
        side.crop_origin(2220, 2967, 2500)


def test_ratios_equal_flops_arithmetic():
    wsi = {"end_to_end_s": 10.0, "model_s": 5.0, "runs": 100, "flops_per_run": 1e9}
    tia = {"end_to_end_s": 200.0, "model_s": 150.0, "runs": 50, "flops_per_run": 20e9}
    r = side.ratios(wsi, tia)
    assert r["end_to_end"] == pytest.approx(20.0)
    assert r["flops"] == pytest.approx(10.0)  # 1e12 FLOPs run against 1e11
    assert r["equal_flops"] == pytest.approx(2.0)
    assert r["model"] == pytest.approx(30.0)
    assert r["model_equal_flops"] == pytest.approx(3.0)
    assert r["gflops_per_s"] == {"wsi": pytest.approx(20.0), "tia": pytest.approx(1000 / 150)}
    no_model = side.ratios({**wsi, "model_s": None}, tia)
    assert "model" not in no_model and no_model["equal_flops"] == pytest.approx(2.0)


def test_hv_targets_are_centred_and_scaled():
    labels = np.zeros((12, 20), np.int32)
    labels[2:7, 3:10] = 1  # 5 x 7 box: centre (4, 6)
    labels[8:11, 14:17] = 2
    hv = side.hv_targets(labels)
    assert hv.shape == (12, 20, 2) and hv.dtype == np.float32
    assert np.all(hv[labels == 0] == 0)
    for k in (1, 2):
        m = labels == k
        assert hv[m, 0].min() == pytest.approx(-1) and hv[m, 0].max() == pytest.approx(1)
        assert hv[m, 1].min() == pytest.approx(-1) and hv[m, 1].max() == pytest.approx(1)
    assert hv[4, 6].tolist() == [0.0, 0.0]  # the first box's centre
    assert hv[4, 3, 0] < 0 < hv[4, 9, 0]  # x grows to the right
    assert side.hv_targets(np.zeros((4, 4), np.int32)).sum() == 0


def test_standin_maps_find_dark_blobs():
    img = np.full((64, 64, 3), 220, np.uint8)
    img[10:20, 10:20] = (90, 60, 140)
    img[40:50, 30:44] = (90, 60, 140)
    np_map, hv = side.standin_maps(img, threshold=150)
    assert np_map.shape == (64, 64, 1) and hv.shape == (64, 64, 2)
    fg = np_map[..., 0] > 0.5
    assert fg[15, 15] and fg[45, 37] and not fg[30, 30]
    assert np.unique(np_map).tolist() == pytest.approx([0.05, 0.95])


def test_otsu_splits_two_modes():
    values = np.concatenate([np.full(500, 60), np.full(500, 200)])
    assert 60 < side.otsu(values) < 200


def test_cpu_info_reads_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n")
    got = side.cpu_info(info)
    assert got["model"] == "Test CPU 9000"
    assert got["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": True,
                            "avx512_vnni": False, "avx_vnni": False}
    assert side.cpu_info(tmp_path / "missing")["flags"]["avx2"] is False


@pytest.mark.skipif(not CMU.is_file(), reason=f"needs {CMU}")
def test_write_region_is_a_pyramid_with_the_slide_mpp(tmp_path):
    import openslide

    reg = side.write_region(tmp_path / "r.tif", 256)
    with openslide.OpenSlide(reg["path"]) as s:
        assert s.dimensions == (256, 256)
        assert s.level_count == 3
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(side.SLIDE_MPP, rel=1e-3)
    assert (reg["x"], reg["y"]) == side.crop_origin(2220, 2967, 256)
    assert 50 < reg["red_threshold"] < 250


def test_gpu_check_sweep_runs_the_first_end_to_end():
    runs = gpu.sweep([16, 64], [4, 8])
    assert [(r["batch_size"], r["reader_threads"], r["stages"]) for r in runs] == [
        (16, 4, "all"), (16, 8, "infer"), (64, 4, "infer"), (64, 8, "infer")]


def test_gpu_check_util_window():
    samples = [(0.0, 10, 100), (1.0, 80, 500), (2.0, 90, 700), (3.0, 20, 300)]
    got = gpu.util_during(samples, 0.5, 2.5)
    assert got == {"samples": 2, "util_mean": 85.0, "util_median": 85.0, "util_max": 90,
                   "mem_max_mib": 700}
    assert gpu.util_during(samples, 5, 6)["util_mean"] is None


def test_gpu_check_where_time_goes_names_the_bound():
    res = {"reader_threads": 4, "seconds": {"tissue": 1.0, "read": 36.0, "model": 4.0, "write": 2.0,
                                            "infer_wall": 11.0, "postproc": 8.0, "export": 1.0}}
    lines = gpu.where_time_goes(res)
    assert lines[0].startswith("infer_wall: 11.0 s (55 %)")
    assert "tile readers busy 90 %" in lines[3]
    assert lines[-1].startswith("bound by: tile readers")
