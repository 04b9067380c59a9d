import torch
from data_fixtures import disc_labels

from wsi_pipeline.data.augment import Augmenter
from wsi_pipeline.data.dataset import NucleusDataset
from wsi_pipeline.data.sample import Sample
from wsi_pipeline.data.validate import relabel_contiguous


def _sample(typed: bool = True) -> Sample:
    image, inst, typ = disc_labels()
    return Sample("x_000", image, relabel_contiguous(inst), typ if typed else None,
                  ("background", "a", "b", "c"), 0.25, group="x")


def test_item_shapes_and_dtypes() -> None:
    for aug in (None, Augmenter()):
        item = NucleusDataset([_sample()], aug, seed=1)[0]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        assert item["ns"].shape == (64, 64) and item["ns"].dtype == torch.int64
        assert set(item["ns"].unique().tolist()) == {0, 1}
        assert item["hv"].shape == (2, 64, 64) and item["hv"].dtype == torch.float32
        assert item["nc"].dtype == torch.int64 and set(item["nc"].unique().tolist()) == {0, 1, 2, 3}
        assert item["inst"].dtype == torch.int32
        bg = item["ns"] == 0
        assert float(item["hv"].abs().max()) <= 1.0 and float(item["hv"][:, bg].abs().max()) == 0.0
        assert torch.equal(item["ns"], (item["inst"] > 0).long())


def test_untyped_sample_gets_one_class() -> None:
    item = NucleusDataset([_sample(typed=False)])[0]
    assert torch.equal(item["nc"], item["ns"])


def test_augmentation_reproducible_per_epoch() -> None:
    ds = NucleusDataset([_sample()] * 8, Augmenter(), seed=5)
    first = [ds[i]["inst"] for i in range(8)]
    again = [ds[i]["inst"] for i in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ds.set_epoch(1)
    other = [ds[i]["inst"] for i in range(8)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
