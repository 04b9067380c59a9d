"""One-file checkpoints that carry everything needed to use the model correctly.

Besides the weights, a checkpoint records the architecture, class names and colours, the
pixel size the model was trained at (slides are resampled to it), training metadata and the
package version; the file's sha256 identifies the model in every output.
"""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import ValidationError

from wsi_pipeline import __version__
from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.hashing import file_sha256
from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.model.network import MultiTaskNet

FORMAT = "wsi-pipeline-checkpoint/1"
REQUIRED_KEYS = ("state_dict", "model_config", "class_names", "class_colors", "mpp")
DEFAULT_COLORS = ("#000000", "#ffbf00", "#ff0000", "#00c800", "#0000ff", "#c800c8", "#00c8c8")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file named in the message."""


@dataclass
class LoadedModel:
    net: MultiTaskNet
    config: ModelConfig
    class_names: tuple[str, ...]
    class_colors: tuple[str, ...]
    mpp: float
    sha256: str
    path: Path
    meta: dict = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    net: MultiTaskNet,
    *,
    class_names: tuple[str, ...] | list[str],
    mpp: float,
    class_colors: tuple[str, ...] | list[str] | None = None,
    meta: dict | None = None,
    half: bool = False,
    train_state: dict | None = None,
) -> str:
    """Write atomically; returns the file's sha256.

    `half` stores float weights as fp16 (shipping); `train_state` (optimizer, scheduler, epoch,
    RNG) makes the file a resumable training checkpoint.
    """
    if len(class_names) != net.config.n_types:
        raise ValueError(f"{len(class_names)} class names for a model with {net.config.n_types} types")
    colors = tuple(class_colors or DEFAULT_COLORS[: len(class_names)])
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
        for k, v in net.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "state_dict": state,
        "model_config": net.config.model_dump(),
        "class_names": list(class_names),
        "class_colors": list(colors),
        "mpp": float(mpp),
        "meta": meta or {},
        "wsi_pipeline_version": __version__,
    }
    if train_state is not None:
        payload["train_state"] = train_state
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return file_sha256(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network in eval mode; any mismatch is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols mean nothing to a user
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({_load_failure(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a wsi-pipeline checkpoint (format {FORMAT} expected)")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    mpp = payload["mpp"]
    if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not (math.isfinite(mpp) and mpp > 0):
        raise CheckpointError(f"{path}: its pixel size mpp={mpp!r} is not a positive number of µm/px")
    try:
        config = ModelConfig(**payload["model_config"])
    except ValidationError as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    bad = non_finite_tensors(payload["state_dict"])
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}): the "
            "training that wrote it diverged; use an earlier checkpoint")
    net = MultiTaskNet.from_config(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match the config {config.model_dump()}: {exc}"
        ) from exc
    names = tuple(payload["class_names"])
    if len(names) != config.n_types:
        raise CheckpointError(f"{path}: {len(names)} class names but n_types={config.n_types}")
    net.to(map_location).eval()
    return LoadedModel(
        net=net,
        config=config,
        class_names=names,
        class_colors=tuple(payload["class_colors"]),
        mpp=float(mpp),
        sha256=file_sha256(path),
        path=path,
        meta=dict(payload.get("meta", {})),
    )


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of `state` with a NaN or infinite value: a network
    that computes NaN everywhere segments nothing, and a run with it would report every slide
    as tissue without nuclei instead of failing."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _load_failure(exc: Exception) -> str:
    """Why torch could not load a file, in our words where torch's would mislead.

    Torch's refusal of a pickle holding arbitrary objects advises loading it with
    weights_only=False, i.e. letting the file run code: never pass that advice on.
    """
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return ("not a torch checkpoint, or one holding Python objects besides tensors and plain "
                "data, which are refused because loading them could run code from the file")
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    if "zip archive" in str(exc):
        return "damaged or truncated: its zip archive cannot be read"
    return f"not a torch checkpoint file ({type(exc).__name__})"


def default_checkpoint_path() -> Path:
    """The weights shipped inside the package; a clear error where none are shipped."""
    path = Path(__file__).resolve().parents[1] / "weights" / "default.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no default weights shipped yet: pass --checkpoint")
    return path
