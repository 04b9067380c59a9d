"""Torch dataset that turns `Sample`s into the three HoVer-Net branch targets."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from wsi_pipeline.datasets.augment import Augmenter
from wsi_pipeline.datasets.points import is_points_only
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.targets import hv_maps
from wsi_pipeline.model.losses import IGNORE


class NucleusDataset(Dataset):
    """Items are dicts: image float32 (3,H,W) in [0,1], ns long (H,W) 0/1, hv float32 (2,H,W),
    nc long (H,W), inst int32 (H,W).

    HV targets are computed after augmentation, from the augmented instance map, so they always
    point at the centres the network sees. Without augmentation they are cached per sample.
    Randomness is a pure function of (seed, epoch, index): call `set_epoch` each epoch, and a
    resumed run sees exactly the same augmentations; DataLoader workers need no reseeding.
    Untyped samples (type_map None) get nc = ns, i.e. one "nucleus" class, or with
    `ignore_untyped_nc` (a mix with typed datasets) nc = IGNORE everywhere: the NC losses then
    learn nothing from them, neither a type nor background. Point-labelled samples
    (`datasets.points`: masks of the labelled nuclei only, type IGNORE elsewhere) get ns =
    IGNORE everywhere, so NS and HV learn nothing from them either.

    With `patch_size`, every item is patch_size² whatever the image size, so images of any size
    batch together: a larger image is cropped (`crop` "random" for training, "center" for a
    deterministic validation loss) before augmentation, a smaller one is padded around its
    centre, reflected for the image and 0 (background, unlabelled) for the labels.
    """

    def __init__(
        self,
        samples: list[Sample],
        augment: Augmenter | None = None,
        seed: int = 0,
        *,
        patch_size: int | None = None,
        crop: Literal["random", "center"] = "random",
        ignore_untyped_nc: bool = False,
    ) -> None:
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.samples = list(samples)
        self.augment = augment
        self.seed = int(seed)
        self.patch_size = patch_size
        self.crop = crop
        self.ignore_untyped_nc = ignore_untyped_nc
        self.epoch = 0
        self._hv_cache: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        image, inst, typ = s.image, s.inst_map, s.type_map
        rng = np.random.default_rng((self.seed, self.epoch, index))
        points_only = is_points_only(s)
        if self.patch_size is not None:
            image, inst, typ = fit_patch(image, inst, typ, self.patch_size,
                                         rng if self.crop == "random" else None,
                                         type_fill=IGNORE if points_only else 0)
        if self.augment is not None:
            image, inst, typ = self.augment(image, inst, typ, rng)
        if self.augment is not None or (self.patch_size is not None and self.crop == "random"):
            hv = hv_maps(inst)
        else:
            cached = self._hv_cache.get(index)
            if cached is None:
                cached = self._hv_cache[index] = hv_maps(inst)
            hv = cached
        ns = inst > 0
        if points_only and typ is None:  # no targets derived yet: nothing to learn here
            typ = np.full(ns.shape, IGNORE)
        if typ is not None:
            nc = typ
        elif self.ignore_untyped_nc:
            nc = np.full(ns.shape, IGNORE)
        else:
            nc = ns
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            "ns": torch.from_numpy(np.full(ns.shape, IGNORE, np.int64) if points_only
                                   else ns.astype(np.int64)),
            "hv": torch.from_numpy(hv),
            "nc": torch.from_numpy(np.asarray(nc, dtype=np.int64)),
            "inst": torch.from_numpy(np.ascontiguousarray(inst, dtype=np.int32)),
        }


def fit_patch(
    image: np.ndarray,
    inst: np.ndarray,
    typ: np.ndarray | None,
    size: int,
    rng: np.random.Generator | None,
    *,
    type_fill: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Crop (at a random offset drawn from `rng`, or centred when None) and pad to size × size;
    padded type pixels get `type_fill` (background, or IGNORE for point-labelled images).

    Draws nothing from `rng` along an axis that already fits, so a dataset of patch_size
    images keeps exactly the augmentation stream it had without cropping.
    """
    h, w = inst.shape
    pads = [((size - n) // 2, size - n - (size - n) // 2) if n < size else (0, 0) for n in (h, w)]
    if any(p != (0, 0) for p in pads):
        image = np.pad(image, [*pads, (0, 0)], mode="reflect")
        inst = np.pad(inst, pads)
        typ = None if typ is None else np.pad(typ, pads, constant_values=type_fill)
    starts = []
    for n in inst.shape:
        if n == size:
            starts.append(0)
        elif rng is None:
            starts.append((n - size) // 2)
        else:
            starts.append(int(rng.integers(0, n - size + 1)))
    window = (slice(starts[0], starts[0] + size), slice(starts[1], starts[1] + size))
    return image[window], inst[window], None if typ is None else typ[window]
