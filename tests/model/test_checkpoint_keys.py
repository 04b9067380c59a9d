"""A checkpoint missing payload keys is a CheckpointError naming the file and the keys."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.model import CheckpointError, MultiTaskNet, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("drop", [("mpp",), ("class_names", "state_dict")])
def test_missing_keys_name_file_and_keys(tmp_path, drop):
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    save_checkpoint(path, MultiTaskNet(n_types=2, encoder="resnet18", width=8),
                    class_names=("background", "nucleus"), mpp=0.5)
    payload = torch.load(path, weights_only=True)
    for key in drop:
        del payload[key]
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(CheckpointError, match=r"broken\.pt: missing key") as err:
        load_checkpoint(broken)
    assert all(key in str(err.value) for key in drop)
