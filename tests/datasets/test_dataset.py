import numpy as np
import torch

from tests.helpers.data_fixtures import disc_labels
from wsi_pipeline.datasets.augment import Augmenter
from wsi_pipeline.datasets.dataset import NucleusDataset, fit_patch
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.labels import relabel


def _sample(typed: bool = True) -> Sample:
    image, inst, typ = disc_labels()
    return Sample("x_000", image, relabel(inst), typ if typed else None,
                  ("background", "a", "b", "c"), 0.25, group="x")


def test_item_shapes_and_dtypes() -> None:
    for aug in (None, Augmenter()):
        item = NucleusDataset([_sample()], aug, seed=1)[0]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
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
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    ds.set_epoch(1)
    other = [ds[i]["inst"] for i in range(8)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_fit_patch_pads_image_by_reflection_and_labels_with_background() -> None:
    image, inst, typ = disc_labels(size=40)
    img, ins, ty = fit_patch(image[:, :30], inst[:, :30], typ[:, :30], 64, None)
    assert img.shape == (64, 64, 3) and ins.shape == ty.shape == (64, 64)
    # rows: 12 above / 12 below; columns: 17 left / 17 right
    np.testing.assert_array_equal(ins[12:52, 17:47], inst[:, :30])
    assert not ins[:12].any() and not ins[:, :17].any() and not ty[52:].any()
    np.testing.assert_array_equal(img[12:52, 16], image[:, 1])  # reflected, not constant


def test_fit_patch_centre_and_random_crops() -> None:
    image, inst, typ = disc_labels(size=64)
    img, ins, _ = fit_patch(image, inst, typ, 32, None)
    np.testing.assert_array_equal(img, image[16:48, 16:48])
    np.testing.assert_array_equal(ins, inst[16:48, 16:48])
    offsets = set()
    for seed in range(8):
        _, ins, _ = fit_patch(image, inst, None, 32, np.random.default_rng(seed))
        assert ins.shape == (32, 32)
        offsets.add(ins.tobytes())
    assert len(offsets) > 1


def test_patch_size_items_of_any_image_size() -> None:
    image, inst, typ = disc_labels(size=96)
    big = Sample("big", image[:, :80], relabel(inst[:, :80]), typ[:, :80],
                 ("background", "a", "b", "c"), 0.25)
    for aug, crop in ((Augmenter(), "random"), (None, "center")):
        ds = NucleusDataset([big, _sample()], aug, seed=3, patch_size=64, crop=crop)
        items = [ds[i] for i in range(2)]
        assert all(it["image"].shape == (3, 64, 64) and it["hv"].shape == (2, 64, 64) for it in items)
        assert all(torch.equal(it["ns"], (it["inst"] > 0).long()) for it in items)


def test_fitting_patches_keep_their_augmentation_stream() -> None:
    """patch_size == image size draws nothing: runs resumed across the change see the same data."""
    plain = NucleusDataset([_sample()] * 3, Augmenter(), seed=2)
    fitted = NucleusDataset([_sample()] * 3, Augmenter(), seed=2, patch_size=64)
    for ds in (plain, fitted):
        ds.set_epoch(4)
    assert all(torch.equal(plain[i]["image"], fitted[i]["image"]) for i in range(3))
