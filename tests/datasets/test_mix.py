from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.datasets.mix import (
    DATASET_KEY,
    DatasetSpec,
    draw_weights,
    rare_class_boost,
    read_mix,
    typed_class_names,
)
from wsi_pipeline.datasets.sample import Sample


def _s(name: str, ds: str, shape=(64, 64), types: tuple[int, ...] | None = None) -> Sample:
    inst = np.zeros(shape, np.int32)
    typ = None if types is None else np.zeros(shape, np.int32)
    for i, t in enumerate(types or (1, 1), 1):
        inst[4 * i : 4 * i + 3, 4:7] = i
        if typ is not None:
            typ[4 * i : 4 * i + 3, 4:7] = t
    names = ("background", "common", "rare") if types else ("background", "nucleus")
    return Sample(name, np.zeros((*shape, 3), np.uint8), inst, typ, names, 0.25,
                  meta={DATASET_KEY: ds})


def test_draw_weights_give_each_dataset_its_share_and_big_images_their_area() -> None:
    samples = [_s("a", "x"), _s("b", "x", (128, 128)), _s("c", "y")]
    p = draw_weights(samples, {"x": 3.0, "y": 1.0}, np.ones(3))
    assert p.sum() == pytest.approx(1.0)
    assert p[0] + p[1] == pytest.approx(0.75) and p[2] == pytest.approx(0.25)
    assert p[1] == pytest.approx(4 * p[0])  # 4x the area


def test_rare_class_boost_follows_the_share_of_rare_nuclei() -> None:
    w = np.array([0.05, 0.1, 1.0])
    samples = [_s("common", "x", types=(1, 1)), _s("mixed", "x", types=(1, 2)),
               _s("rare", "x", types=(2, 2)), _s("untyped", "y")]
    boost = rare_class_boost(samples, w, strength=2.0)
    assert boost[3] == 1.0
    assert boost[0] < boost[1] < boost[2] == pytest.approx(3.0)
    assert np.all(rare_class_boost(samples, w, 0.0) == 1.0)


def test_typed_datasets_must_agree_on_classes() -> None:
    a = _s("a", "x", types=(1,))
    assert typed_class_names([a, _s("u", "y")]) == ("background", "common", "rare")
    b = Sample("b", a.image, a.inst_map, a.type_map, ("background", "p", "q"), 0.25)
    with pytest.raises(ValueError, match="disagree on classes"):
        typed_class_names([a, b])
    assert typed_class_names([_s("u", "y")]) is None


def test_real_mix_resamples_holds_out_named_groups_and_tags_datasets(shared_data: Path) -> None:
    specs = [
        DatasetSpec(name="cpm15", format="cpm15", root=shared_data / "cpm15",
                    val_groups=["image02", "image12"]),
        DatasetSpec(name="cryo", format="cryonuseg", root=shared_data / "cryonuseg"),
    ]
    train, val = read_mix(specs, 0.25, "fail")
    assert sorted(s.name for s in val) == ["image02", "image12"]
    assert {s.meta[DATASET_KEY] for s in train} == {"cpm15", "cryo"}
    assert all(s.mpp == 0.25 for s in train + val)
    image02 = next(s for s in val if s.name == "image02")
    assert image02.image.shape[:2] == (980, 976)  # 488x490 at 20x, upsampled x2
    with pytest.raises(ValueError, match="val_groups \\['nope'\\] not in"):
        read_mix([DatasetSpec(name="c", format="cpm15", root=shared_data / "cpm15",
                              val_groups=["nope"])], 0.25, "fail")
    with pytest.raises(ValueError, match="unknown format"):
        DatasetSpec(name="c", format="nope", root=shared_data)
