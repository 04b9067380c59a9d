"""`fit-type-offsets`: offsets fitted on the training split only, written into a copy of the
checkpoint's type head with their provenance; the input checkpoint is never written over."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from click.testing import CliRunner
from skimage.draw import disk

from wsi_pipeline.cli import main
from wsi_pipeline.datasets import Sample, write_common
from wsi_pipeline.model import load_checkpoint, save_checkpoint
from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.model.network import MultiTaskNet

NAMES = ("background", "other", "round")


def _sample(seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    inst = np.zeros((64, 64), np.int32)
    typ = np.zeros((64, 64), np.int32)
    image = np.full((64, 64, 3), 230, np.uint8)
    for i in range(1, 6):
        r, c = rng.integers(10, 54, size=2)
        rr, cc = disk((r, c), 5, shape=inst.shape)
        inst[rr, cc] = i
        typ[rr, cc] = 1 + i % 2
        image[rr, cc] = (80, 40, 140)
    return Sample(f"s{seed}", image, inst, typ, NAMES, 0.5, group=f"g{seed}")


def _setup(tmp_path):
    write_common([_sample(i) for i in range(4)], tmp_path / "data")
    torch.manual_seed(0)
    net = MultiTaskNet.from_config(ModelConfig(n_types=3, encoder="resnet18", width=8)).eval()
    ckpt = tmp_path / "start.pt"
    save_checkpoint(ckpt, net, class_names=NAMES, mpp=0.5)
    cfg = {"out_dir": str(tmp_path / "run"), "patch_size": 64, "mpp": 0.5,
           "model": {"n_types": 3, "encoder": "resnet18", "width": 8},
           "data": {"datasets": [{"name": "toy", "format": "common", "root": str(tmp_path / "data"),
                                  "val_fraction": 0.5}]}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    return ckpt


def test_offsets_go_into_a_copy_of_the_head_with_their_provenance(tmp_path):
    ckpt = _setup(tmp_path)
    before = ckpt.read_bytes()
    out = tmp_path / "offsets.pt"
    result = CliRunner().invoke(main, ["fit-type-offsets", str(ckpt), "--config",
                                       str(tmp_path / "train.yaml"), "-o", str(out), "--fp32"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert ckpt.read_bytes() == before
    start, fitted = load_checkpoint(ckpt), load_checkpoint(out)
    record = fitted.meta["type_offsets"]
    assert record["from"]["sha256"] == start.sha256
    assert record["fitted_on"]["images"] == "training split" and record["fitted_on"]["datasets"] == ["toy"]
    offsets = torch.tensor([record["offsets"][n] for n in NAMES])
    bias = "decoders.nc.head.bias"
    assert torch.allclose(fitted.net.state_dict()[bias] - start.net.state_dict()[bias], offsets, atol=1e-4)
    for name, value in fitted.net.state_dict().items():
        if name != bias:
            assert torch.equal(value, start.net.state_dict()[name]), name
    printed = json.loads(result.output[: result.output.rindex("}") + 1])
    assert printed["objective_end"] >= printed["objective_start"]


def test_refuses_its_input_as_output_and_an_unknown_class(tmp_path):
    ckpt = _setup(tmp_path)
    args = ["fit-type-offsets", str(ckpt), "--config", str(tmp_path / "train.yaml")]
    result = CliRunner().invoke(main, [*args, "-o", str(ckpt)])
    assert result.exit_code != 0 and "CHECKPOINT itself" in result.output
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x.pt"), "--rare-class", "mitotic"])
    assert result.exit_code != 0 and "'mitotic' is not one of the model's classes" in result.output
    assert not (tmp_path / "x.pt").exists()
