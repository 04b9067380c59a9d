"""Point labels become type targets on the network's own instances (`datasets.points`).

The nuclei a point set marks have no outlines; the network that is being fine-tuned already
draws good ones (segmentation PQ 0.58 across organs). Each point-labelled image is run once
through the full prediction path (tiled network, two-step watershed with the run's
post-processing) of a segmentation checkpoint, and its instance map is cached under a key of
the checkpoint's sha256, the post-processing settings and the image's content, so a resumed or
repeated run reads it back and a change of any of them recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.datasets.points import apply_point_targets
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.evaluation.scoring import validation_tiling
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.model.checkpoint import load_checkpoint
from wsi_pipeline.postproc import PostprocConfig, segment_instances
from wsi_pipeline.training.scoring_net import scoring_network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceSource:
    """What the cached instances depend on."""

    checkpoint: Path
    postproc: PostprocConfig
    mpp: float
    tile: int
    stride: int

    def key(self, sha256: str, image: np.ndarray, backend: str = "") -> str:
        """Cache key of `image`'s instances predicted by the checkpoint of `sha256` on `backend`."""
        h = hashlib.sha256()
        h.update(sha256.encode())
        h.update(backend.encode())
        h.update(json.dumps(self.postproc.model_dump(mode="json"), sort_keys=True).encode())
        h.update(f"{self.mpp:.6f}/{self.tile}/{self.stride}/{image.shape}".encode())
        h.update(np.ascontiguousarray(image).tobytes())
        return h.hexdigest()[:20]


def derive_point_targets(samples: list[Sample], source: InstanceSource, cache_dir: Path, *,
                         device: torch.device | str = "cpu", batch_size: int = 8,
                         refresh: bool = False, disk_um: float = 3.0, snap_um: float = 1.5
                         ) -> list[Sample]:
    """`samples` with every point-labelled one given its targets (`apply_point_targets`) on the
    instances `source` predicts, read from `cache_dir` where present (unless `refresh`)."""
    todo = [i for i, s in enumerate(samples) if s.points is not None]
    if not todo:
        return samples
    loaded = load_checkpoint(source.checkpoint, map_location=device)
    net = scoring_network(loaded.net.to(device).eval(), torch.device(device))
    backend = type(net).__name__ + str(getattr(net, "precision", ""))
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = list(samples)
    t0, computed = time.time(), 0
    for n, i in enumerate(todo, start=1):
        s = samples[i]
        path = cache_dir / f"{s.name}-{source.key(loaded.sha256, s.image, backend)}.npz"
        inst = None
        if path.is_file() and not refresh:
            try:
                with np.load(path) as z:
                    inst = z["inst_map"]
            except (OSError, ValueError, KeyError) as exc:
                log.warning("%s: unreadable cached instances (%s); recomputing", path, exc)
        if inst is None or inst.shape != s.image.shape[:2]:
            with torch.inference_mode():
                maps = predict_tiled(net, s.image, tile=source.tile, stride=source.stride,
                                     batch_size=batch_size, device=device)
            inst = segment_instances(maps["ns"], maps["hv"], maps["nc"], mpp=source.mpp,
                                     config=source.postproc).inst_map.astype(np.int32)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, inst_map=inst)
            computed += 1
            rate = (time.time() - t0) / computed
            log.info("point instances %d/%d (%s, %d nuclei), ETA %.0f s", n, len(todo), s.name,
                     int(inst.max()), rate * (len(todo) - n))
        out[i] = apply_point_targets(s, inst, source.mpp, disk_um=disk_um, snap_um=snap_um)
    log.info("point-labelled images: %d (%d predicted by %s sha256 %s…, %d from %s)", len(todo),
             computed, source.checkpoint, loaded.sha256[:8], len(todo) - computed, cache_dir)
    return out


def default_source(checkpoint: Path, postproc: PostprocConfig, mpp: float, patch_size: int
                   ) -> InstanceSource:
    """The source of a training run: validation's tiling of `patch_size` crops."""
    tile, stride = validation_tiling(patch_size)
    return InstanceSource(Path(checkpoint), postproc, mpp, tile, stride)
