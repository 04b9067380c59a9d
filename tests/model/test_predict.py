"""CPU bf16 autocast only where the CPU has native bf16: emulated bf16 (Skylake AVX-512) is slower
than fp32."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.model import predict

SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 avx512f avx512dq avx512bw avx512vl\n"
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx512f amx_tile amx_int8 amx_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("text, native", [(SKYLAKE, False), (COOPER_LAKE, True),
                                          (SAPPHIRE_RAPIDS, True), (GRAVITON3, True), ("", False)])
def test_native_bf16_from_cpu_flags(tmp_path, monkeypatch, text, native):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    read_flags = predict.cpu_flags
    monkeypatch.setattr(predict, "cpu_flags", lambda: read_flags(info))
    assert bool(predict.cpu_flags() & predict.NATIVE_BF16_FLAGS) == native
    supported = predict.cpu_supports_bf16.__wrapped__()
    assert supported == (native and torch.backends.mkldnn.is_available())
    monkeypatch.setattr(predict, "cpu_supports_bf16", lambda: supported)
    want = torch.bfloat16 if supported else None
    assert predict.autocast_dtype(torch.device("cpu"), "auto") == want
    assert predict.autocast_dtype(torch.device("cpu"), "fp32") is None


def test_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert predict.cpu_flags(tmp_path / "missing") == frozenset()


def test_flip_tta_undoes_each_flip_and_hv_signs() -> None:
    """A flip-equivariant stand-in network: NS/NC depend on each pixel alone, and HV is the
    offset of each pixel from the tile centre — what HoVer-Net predicts for one nucleus filling
    the tile, and a map whose H channel changes sign under a left-right flip. TTA must give back
    the same maps: flips undone, H and V signs restored."""
    import numpy as np
    import torch

    from wsi_pipeline.model.predict import predict_batch

    class CentredNucleus(torch.nn.Module):
        def forward(self, x):
            b, _, h, w = x.shape
            hx = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
            vy = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
            ns = torch.cat([torch.zeros_like(x[:, :1]), x[:, 2:3] * 4], 1)
            nc = torch.cat([x[:, 2:3], -x[:, 2:3]], 1)
            return {"ns": ns, "hv": torch.cat([hx, vy], 1), "nc": nc}

    img = np.random.default_rng(0).integers(0, 256, (2, 32, 64, 3)).astype(np.uint8)
    plain = predict_batch(CentredNucleus(), img, precision="fp32")
    tta = predict_batch(CentredNucleus(), img, precision="fp32", tta=True)
    for key in ("ns", "hv", "nc"):
        assert np.allclose(plain[key], tta[key], atol=1e-6), key
    # without the sign correction the flipped H channel would average to zero
    assert np.abs(tta["hv"][:, 0, :, -1] - 1).max() < 1e-6
