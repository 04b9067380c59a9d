import numpy as np
import pytest

from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.split import split_by_group


def _samples(groups: dict[str, int]) -> list[Sample]:
    z = np.zeros((4, 4), np.int32)
    img = np.zeros((4, 4, 3), np.uint8)
    return [
        Sample(f"{g}_{i:03d}", img, z, z, ("background", "a"), 0.25, group=g)
        for g, n in groups.items()
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(10))
def test_split_never_leaks_groups(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = _samples({f"tile_{k}": int(rng.integers(1, 20)) for k in range(12)})
    train, val = split_by_group(samples, 0.2, seed)
    assert len(train) + len(val) == len(samples)
    assert not {s.group for s in train} & {s.group for s in val}
    assert val and train
    assert abs(len(val) / len(samples) - 0.2) < 0.15


def test_split_deterministic_and_zero() -> None:
    samples = _samples({f"t{k}": 16 for k in range(27)})
    a = split_by_group(samples, 0.2, 3)
    b = split_by_group(samples, 0.2, 3)
    assert [s.name for s in a[1]] == [s.name for s in b[1]]
    assert len(a[1]) == 5 * 16
    train, val = split_by_group(samples, 0.0, 3)
    assert len(train) == len(samples) and not val
