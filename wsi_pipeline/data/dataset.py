"""Torch dataset that turns `Sample`s into the three HoVer-Net branch targets."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from wsi_pipeline.data.augment import Augmenter
from wsi_pipeline.data.sample import Sample
from wsi_pipeline.targets import hv_maps


class NucleusDataset(Dataset):
    """Items are dicts: image float32 (3,H,W) in [0,1], ns long (H,W) 0/1, hv float32 (2,H,W),
    nc long (H,W), inst int32 (H,W).

    HV targets are computed after augmentation, from the augmented instance map, so they always
    point at the centres the network sees. Without augmentation they are cached per sample.
    Randomness is a pure function of (seed, epoch, index): call `set_epoch` each epoch, and a
    resumed run sees exactly the same augmentations; DataLoader workers need no reseeding.
    Untyped samples (type_map None) get nc = ns, i.e. one "nucleus" class.
    """

    def __init__(self, samples: list[Sample], augment: Augmenter | None = None, seed: int = 0) -> None:
        self.samples = list(samples)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._hv_cache: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        image, inst, typ = s.image, s.inst_map, s.type_map
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, inst, typ = self.augment(image, inst, typ, rng)
            hv = hv_maps(inst)
        else:
            hv = self._hv_cache.get(index)
            if hv is None:
                hv = self._hv_cache[index] = hv_maps(inst)
        ns = inst > 0
        nc = ns if typ is None else typ
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            "ns": torch.from_numpy(ns.astype(np.int64)),
            "hv": torch.from_numpy(hv),
            "nc": torch.from_numpy(np.asarray(nc, dtype=np.int64)),
            "inst": torch.from_numpy(np.ascontiguousarray(inst, dtype=np.int32)),
        }
