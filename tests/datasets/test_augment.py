import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage as ndi
from skimage.color import hed2rgb, rgb2hed

from tests.helpers.data_fixtures import disc_labels
from wsi_pipeline.datasets.augment import (
    Augmenter,
    _affine_source,
    color_jitter,
    hed_jitter,
    warp_labels,
)
from wsi_pipeline.datasets.augment_config import AugmentConfig
from wsi_pipeline.datasets.dataset import NucleusDataset
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.labels import relabel

GEOMETRY_ONLY = {"p_hed": 0.0, "p_color": 0.0, "p_blur": 0.0, "p_scan": 0.0}


def _coded(size: int = 96):
    """Image whose red channel encodes the instance id, so alignment can be read off pixels."""
    centres = ((30, 30), (30, 66), (66, 40), (60, 70))
    _, inst, typ = disc_labels(size, centres, radius=8, ids=(1, 2, 3, 4), types=(1, 2, 3, 1))
    # red 60*i, green 240-60*i: no bilinear blend of an instance with the black background can
    # take another instance's colour (nuclei do not touch)
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = np.where(inst > 0, 60 * inst, 0)
    image[..., 1] = np.where(inst > 0, 240 - 60 * inst, 0)
    return image, inst, typ


@pytest.mark.parametrize("p_affine", [0.0, 1.0])
def test_instances_move_with_image(p_affine: float) -> None:
    image, inst, typ = _coded()
    aug = Augmenter(AugmentConfig(p_affine=p_affine, **GEOMETRY_ONLY))
    for seed in range(12):
        img2, inst2, typ2 = aug(image, inst, typ, np.random.default_rng(seed))
        assert img2.shape == image.shape and inst2.shape == inst.shape == typ2.shape
        assert inst2.dtype == np.int32
        red, green = img2[..., 0].astype(int), img2[..., 1].astype(int)
        for i in range(1, 5):
            lab = inst2 == i
            assert lab.any()
            near = ndi.binary_dilation(lab, iterations=3)  # ignores mirrored copies elsewhere
            painted = near & (np.abs(red - 60 * i) <= 12) & (np.abs(green - 240 + 60 * i) <= 12)
            c_lab = np.array(ndi.center_of_mass(lab))
            c_img = np.array(ndi.center_of_mass(painted))
            assert np.abs(c_lab - c_img).max() < 1.0
            # nearest-neighbour labels: each instance keeps exactly one type
            assert np.unique(typ2[lab]).size == 1
        assert ((inst2 > 0) == (typ2 > 0)).all()


def test_flip_rot90_is_exact_permutation() -> None:
    image, inst, typ = _coded()
    aug = Augmenter(AugmentConfig(p_affine=0.0, **GEOMETRY_ONLY))
    img2, inst2, _ = aug(image, inst, typ, np.random.default_rng(3))
    assert np.bincount(inst2.ravel()).tolist() == np.bincount(inst.ravel()).tolist()
    assert (img2[..., 0] == np.where(inst2 > 0, 60 * inst2, 0)).all()


def test_mirrored_copies_get_their_own_ids() -> None:
    _, inst, typ = disc_labels(64, ((6, 6), (32, 32)), radius=5, ids=(1, 2), types=(1, 2))
    zoom_out = np.eye(2) * 2.0  # output offset -> source offset: shows mirrored surroundings
    src_r, src_c = _affine_source(inst.shape, zoom_out)
    inst2, typ2 = warp_labels(inst, typ, src_r, src_c)
    assert inst2.max() > 2
    for i in range(1, int(inst2.max()) + 1):
        _, n_parts = ndi.label(inst2 == i)
        assert n_parts == 1, f"instance {i} covers {n_parts} disjoint places"
        assert np.unique(typ2[inst2 == i]).size == 1


def test_hv_targets_after_augmentation_in_range_and_zero_on_background() -> None:
    image, inst, typ = disc_labels(96, ((10, 10), (48, 50), (80, 20)), radius=9)
    sample = Sample("s_000", image, relabel(inst), typ, ("bg", "a", "b", "c"), 0.25)
    ds = NucleusDataset([sample] * 6, Augmenter(AugmentConfig(p_affine=1.0, p_blur=1.0)), seed=0)
    for i in range(len(ds)):
        item = ds[i]
        hv, ns = item["hv"].numpy(), item["ns"].numpy()
        assert hv.min() >= -1.0 and hv.max() <= 1.0
        assert (hv[:, ns == 0] == 0).all()
        assert hv.min() == -1.0 and hv.max() == 1.0


def test_hed_jitter_identity_and_matches_skimage() -> None:
    rng = np.random.default_rng(0)
    stains = np.stack([rng.uniform(0.01, 0.08, (32, 32)), rng.uniform(0.005, 0.03, (32, 32)),
                       rng.uniform(0.0, 0.005, (32, 32))], axis=-1)
    image = (hed2rgb(stains) * 255 + 0.5).astype(np.uint8)  # a plausible H&E image
    same = hed_jitter(image, np.ones(3), np.zeros(3))
    assert np.abs(same * 255 - image).max() < 0.01
    alpha, beta = np.array([1.1, 0.9, 1.0]), np.array([0.004, -0.003, 0.0])
    ours = hed_jitter(image, alpha, beta)
    stains = rgb2hed(image)
    positive = (stains > 0).all(axis=-1)  # rgb2hed clips negatives to 0
    ref = hed2rgb(stains * alpha + beta)
    assert positive.mean() > 0.5
    assert np.abs(ours - ref)[positive].max() < 1e-3
    more_h = rgb2hed((hed_jitter(image, np.array([1.3, 1, 1]), np.zeros(3)) * 255).astype(np.uint8))
    assert more_h[..., 0].mean() > stains[..., 0].mean()


def test_color_jitter_and_colour_steps_leave_labels() -> None:
    img = np.full((8, 8, 3), 0.5, np.float32)
    assert color_jitter(img, 0.1, 1.0, 1.0).mean() == pytest.approx(0.6, abs=1e-6)
    image, inst, typ = _coded()
    aug = Augmenter(AugmentConfig(flip_rot90=False, p_affine=0, p_hed=1, p_color=1, p_blur=1))
    img2, inst2, typ2 = aug(image, inst, typ, np.random.default_rng(1))
    assert img2.dtype == np.uint8 and not np.array_equal(img2, image)
    assert inst2 is inst and typ2 is typ


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(p_flip=0.5)
    with pytest.raises(ValidationError):
        AugmentConfig(p_affine=1.5)


def test_scan_degradation_is_deterministic_keeps_geometry_and_degrades() -> None:
    from wsi_pipeline.datasets.augment import scan_degrade

    image, inst, typ = _coded(128)
    cfg = AugmentConfig(flip_rot90=False, p_affine=0.0, p_scan=1.0, p_hed=0.0, p_color=0.0,
                        p_blur=0.0)
    a = Augmenter(cfg)(image, inst, typ, np.random.default_rng(5))
    b = Augmenter(cfg)(image, inst, typ, np.random.default_rng(5))
    c = Augmenter(cfg)(image, inst, typ, np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert np.array_equal(a[1], inst)  # labels untouched
    assert not np.array_equal(a[0], image)
    # every nucleus's colour stays centred on its label (no shift from the round trip)
    degraded = scan_degrade(image, 2.0, 30)
    for i in range(1, 5):
        weight = np.abs(degraded[..., 0].astype(float) - 0) * (ndi.binary_dilation(inst == i, iterations=4))
        c_img = np.array(ndi.center_of_mass(weight))
        c_lab = np.array(ndi.center_of_mass(inst == i))
        assert np.abs(c_img - c_lab).max() < 0.5
    # lower JPEG quality loses more
    err = [np.abs(scan_degrade(image, 2.0, q).astype(int) - image).mean() for q in (90, 30)]
    assert err[1] > err[0] > 0
