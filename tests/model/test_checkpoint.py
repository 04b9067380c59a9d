"""Checkpoint round trips and clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_pipeline.model import CheckpointError, MultiTaskNet, load_checkpoint, save_checkpoint
from wsi_pipeline.model.checkpoint import file_sha256

NAMES = ("background", "a", "b")


def _net(**kw) -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(n_types=3, encoder="resnet18", width=8, **kw)


def test_round_trip_is_bit_exact(tmp_path):
    net = _net()
    sha = save_checkpoint(tmp_path / "m.pt", net, class_names=NAMES, mpp=0.25, meta={"epochs": 3})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.sha256 == sha == file_sha256(tmp_path / "m.pt")
    assert loaded.class_names == NAMES and loaded.mpp == 0.25 and loaded.meta == {"epochs": 3}
    assert loaded.config == net.config
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not loaded.net.training


def test_half_storage_is_close(tmp_path):
    net = _net()
    save_checkpoint(tmp_path / "h.pt", net, class_names=NAMES, mpp=0.5, half=True)
    loaded = load_checkpoint(tmp_path / "h.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = net.eval()(x), loaded.net(x)
    assert torch.allclose(a["hv"], b["hv"], atol=2e-2)


def test_mismatched_config_fails_clearly(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _net(), class_names=NAMES, mpp=0.25)
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["width"] = 16
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: weights do not match the config"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_class_names_must_match_types(tmp_path):
    with pytest.raises(ValueError, match="class names"):
        save_checkpoint(tmp_path / "m.pt", _net(), class_names=("x",), mpp=0.25)


def test_export_model_cli_writes_half_copy(tmp_path):
    from click.testing import CliRunner

    from wsi_pipeline.cli import main

    src = tmp_path / "train.pt"
    save_checkpoint(src, _net(), class_names=NAMES, mpp=0.25, meta={"epoch": 4},
                    train_state={"epoch": 4})
    result = CliRunner().invoke(main, ["export-model", str(src), str(tmp_path / "ship.pt")])
    assert result.exit_code == 0, result.output
    shipped = load_checkpoint(tmp_path / "ship.pt")
    assert shipped.meta["epoch"] == 4 and shipped.meta["exported_from"]["file"] == "train.pt"
    assert "train_state" not in torch.load(tmp_path / "ship.pt", weights_only=True)
    assert (tmp_path / "ship.pt").stat().st_size < 0.6 * src.stat().st_size
    assert shipped.sha256 in result.output


class _Opaque:
    pass


def test_unreadable_checkpoints_never_advise_unsafe_loading(tmp_path):
    """Torch's refusal suggests weights_only=False, i.e. letting the file run code: never passed on."""
    cases = {"garbage.pt": np.random.default_rng(0).bytes(2048), "empty.pt": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"x": _Opaque()}, tmp_path / "object.pt")
    for name in (*cases, "object.pt"):
        with pytest.raises(CheckpointError, match=name) as info:
            load_checkpoint(tmp_path / name)
        assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mpp", [0.0, -0.5, float("nan")])
def test_checkpoint_pixel_size_must_be_positive(tmp_path, mpp):
    save_checkpoint(tmp_path / "m.pt", _net(), class_names=NAMES, mpp=mpp)
    with pytest.raises(CheckpointError, match=r"m\.pt: its pixel size mpp=.* is not a positive number"):
        load_checkpoint(tmp_path / "m.pt")
