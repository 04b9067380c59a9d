"""H&E augmentation on numpy arrays: geometry applied identically to image and labels."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """Probabilities and magnitudes of each augmentation."""

    model_config = ConfigDict(extra="forbid")

    flip_rot90: bool = Field(True, description="random flips and 90-degree rotations (the dihedral group)")


class Augmenter:
    """Callable `(image, inst_map, type_map, rng) -> (image, inst_map, type_map)`."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(
        self,
        image: np.ndarray,
        inst_map: np.ndarray,
        type_map: np.ndarray | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.config.flip_rot90:
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            image, inst_map, type_map = (
                None if a is None else _dihedral(a, k, flip) for a in (image, inst_map, type_map)
            )
        return image, inst_map, type_map


def _dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(0, 1))
    if flip:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)
