import json

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from wsi_pipeline.datasets.augment import hed_jitter, to_uint8
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    build_normalizer,
    normalize_samples,
    normalizer_from_meta,
)
from wsi_pipeline.training.config import StainNormConfig

H = np.array([0.65, 0.70, 0.29])
E = np.array([0.07, 0.99, 0.11])


def _synthetic_he(seed: int, h=H, e=E, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    conc = np.stack([rng.uniform(0.0, 1.2, size * size), rng.uniform(0.0, 0.8, size * size)])
    stains = np.stack([h / np.linalg.norm(h), e / np.linalg.norm(e)], axis=1)
    rgb = 240 * np.exp(-(stains @ conc)) - 1
    return np.clip(rgb.T.reshape(size, size, 3) + 0.5, 0, 255).astype(np.uint8)


def test_macenko_recovers_stain_vectors() -> None:
    m = MacenkoNormalizer().stain_matrix(_synthetic_he(0))
    assert m is not None
    assert abs(m[:, 0] @ (H / np.linalg.norm(H))) > 0.99
    # E's weak red absorption puts pure-E pixels under the OD threshold: its estimate is rougher
    assert abs(m[:, 1] @ (E / np.linalg.norm(E))) > 0.97


def _restained(image: np.ndarray, alpha) -> np.ndarray:
    return to_uint8(hed_jitter(image, np.asarray(alpha, float), np.zeros(3)))


@pytest.mark.parametrize("alpha", [(1.3, 0.8, 1.0), (0.7, 1.3, 1.0)])
def test_macenko_undoes_stain_change(alpha) -> None:
    target = _synthetic_he(1)
    norm = MacenkoNormalizer().fit([target])
    assert np.abs(norm(target).astype(int) - target).mean() < 1.0  # target maps to itself
    source = _restained(target, alpha)
    before = np.abs(source.astype(int) - target).mean()
    after = np.abs(norm(source).astype(int) - target).mean()
    assert after < 0.3 * before
    blank = np.full((16, 16, 3), 250, np.uint8)
    assert norm(blank) is blank  # no tissue: left alone


def test_reinhard_undoes_stain_change_on_real_patch(shared_data) -> None:
    path = shared_data / "consep_patches" / "train" / "images" / "train_10_003.jpg"
    target = np.asarray(Image.open(path).convert("RGB"))
    norm = ReinhardNormalizer.fit([target])
    source = _restained(target, (1.3, 0.8, 1.0))
    before = np.abs(source.astype(int) - target).mean()
    after = np.abs(norm(source).astype(int) - target).mean()
    assert after < 0.5 * before


def test_reinhard_matches_lab_statistics() -> None:
    target = _synthetic_he(3)
    norm = ReinhardNormalizer.fit([target])
    out = norm(_synthetic_he(4, h=np.array([0.5, 0.8, 0.3])))
    lab = rgb2lab(out).reshape(-1, 3)
    assert np.abs(lab.mean(0) - norm.mean).max() < 2.0


def test_build_and_apply_to_samples(tmp_path) -> None:
    assert build_normalizer(StainNormConfig()) is None
    with pytest.raises(ValueError):
        build_normalizer(StainNormConfig(method="reinhard"))
    Image.fromarray(_synthetic_he(5)).save(tmp_path / "ref.png")
    norm = build_normalizer(StainNormConfig(method="reinhard", reference_images=[tmp_path / "ref.png"]))
    z = np.zeros((64, 64), np.int32)
    s = Sample("a", _synthetic_he(6), z, None, ("background",), 0.25)
    (out,) = normalize_samples([s], norm)
    assert out.inst_map is s.inst_map and not np.array_equal(out.image, s.image)
    assert isinstance(build_normalizer(StainNormConfig(method="macenko")), MacenkoNormalizer)


def _two_lab_slide() -> np.ndarray:
    """64 x 128 'slide' whose left and right halves are stained differently, so that crops of
    it have different statistics, as tiles of a real slide do."""
    return np.concatenate([_synthetic_he(7), _restained(_synthetic_he(8), (1.3, 0.8, 1.0))], axis=1)


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_slide_statistics_make_overlapping_crops_agree(method) -> None:
    """The seam argument: two overlapping tiles normalised with ONE estimate for the slide are
    identical where they overlap; each normalised with its own estimate (`__call__`), not."""
    slide = _two_lab_slide()
    norm = ReinhardNormalizer.fit([_synthetic_he(3)]) if method == "reinhard" else MacenkoNormalizer()
    left, right = slide[:, :96], slide[:, 32:]  # overlap: slide columns 32..95
    stats = norm.source_stats(slide)
    np.testing.assert_array_equal(norm.apply(left, stats)[:, 32:], norm.apply(right, stats)[:, :64])
    np.testing.assert_array_equal(norm.apply(slide, stats)[:, 32:], norm.apply(right, stats))
    own = np.abs(norm(left)[:, 32:].astype(int) - norm(right)[:, :64]).mean()
    assert own > 2.0, own
    # __call__ is apply with the image's own statistics
    np.testing.assert_array_equal(norm(left), norm.apply(left, norm.source_stats(left)))


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_meta_round_trip_rebuilds_the_same_normalizer(method, tmp_path) -> None:
    Image.fromarray(_synthetic_he(5)).save(tmp_path / "ref.png")
    norm = build_normalizer(StainNormConfig(method=method, reference_images=[tmp_path / "ref.png"]))
    meta = norm.to_meta()
    assert meta["method"] == method
    rebuilt = normalizer_from_meta(json.loads(json.dumps(meta)))  # as stored: JSON-able, exact
    assert type(rebuilt) is type(norm) and rebuilt.to_meta() == meta
    image = _synthetic_he(6)
    np.testing.assert_array_equal(rebuilt(image), norm(image))
    stats = norm.source_stats(image)
    assert json.loads(json.dumps(stats.to_meta())) == stats.to_meta()


def test_no_meta_means_no_normalizer() -> None:
    assert normalizer_from_meta(None) is None and normalizer_from_meta({}) is None
    assert normalizer_from_meta({"method": "none"}) is None
    with pytest.raises(ValueError, match="vahadane"):
        normalizer_from_meta({"method": "vahadane", "target": {}})


def test_too_little_tissue_gives_no_statistics() -> None:
    """Glass alone must not be 'normalised' into tissue colours: no estimate, image unchanged."""
    blank = np.full((32, 32, 3), 245, np.uint8)
    blank[:4, :4] = (90, 40, 140)  # 16 stained pixels: below MIN_STAINED_PIXELS
    for norm in (ReinhardNormalizer.fit([_synthetic_he(3)]), MacenkoNormalizer()):
        assert norm.source_stats(blank) is None
        assert norm(blank) is blank
