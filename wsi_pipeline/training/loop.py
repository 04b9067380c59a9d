"""Training loop: from-scratch multi-task training that resumes exactly after interruption.

A run directory holds `last.pt` (weights + optimizer + scheduler + RNG + history: everything
to continue), `best.pt` (weights of the best validation epoch), `history.csv` and
`curves.png`. Both .pt files are ordinary checkpoints (`load_checkpoint` reads them). With
`optim.ema_decay`, the weights they hold (and validation scores) are the moving average;
last.pt keeps the optimised weights beside it (`train_state["train_weights"]`) to continue.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, WeightedRandomSampler

from wsi_pipeline.atomic import atomic_path, write_text_atomic
from wsi_pipeline.datasets import (
    Augmenter,
    NucleusDataset,
    Sample,
    build_normalizer,
    normalize_samples,
    read_consep_patches,
    split_by_group,
)
from wsi_pipeline.datasets.mix import (
    DATASET_KEY,
    draw_weights,
    rare_class_boost,
    read_mix,
    typed_class_names,
)
from wsi_pipeline.evaluation.scoring import (
    POOLED,
    flatten_scores,
    score_by_dataset,
    score_names,
    validation_tiling,
)
from wsi_pipeline.model import MultiTaskNet, save_checkpoint
from wsi_pipeline.model.checkpoint import CheckpointError, load_checkpoint
from wsi_pipeline.model.losses import cost_matrix_from_counts, multitask_loss
from wsi_pipeline.model.predict import autocast_dtype, resolve_device
from wsi_pipeline.postproc.config import PostprocConfig
from wsi_pipeline.training.config import NETWORK_PARTS, TrainConfig
from wsi_pipeline.training.point_instances import default_source, derive_point_targets
from wsi_pipeline.training.scoring_net import scoring_network

log = logging.getLogger(__name__)


#: the type branch's last layer, which a new class list replaces
TYPE_HEAD = "decoders.nc.head"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss: stopped before any weights of it were saved."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_epoch: int
    best_score: float
    history: list[dict]


def class_counts(samples: list[Sample], n_types: int, mode: str) -> np.ndarray:
    """Pixels (or instances) per class over the training set, class 0 = background.

    Background is not made of instances, so in "instances" mode its count is set to that of the
    most frequent nucleus class: it then gets the smallest cost, as in "pixels" mode, instead of
    counting once per image and becoming the "rarest", most expensive class.
    """
    counts = np.zeros(n_types, dtype=np.float64)
    for s in samples:
        if s.type_map is None:
            continue
        if mode == "pixels":  # IGNORE pixels (unlabelled parts of point-labelled images) left out
            labelled = s.type_map.ravel()
            counts += np.bincount(labelled[labelled >= 0], minlength=n_types)[:n_types]
        else:
            ids, first = np.unique(s.inst_map, return_index=True)
            types = s.type_map.ravel()[first[ids > 0]]
            counts += np.bincount(types, minlength=n_types)[:n_types]
    if mode == "instances":
        counts[0] = counts[1:].max(initial=0)
    return counts


def cost_matrix(cfg: TrainConfig, train: list[Sample]) -> tuple[np.ndarray, dict]:
    n = cfg.model.n_types
    if cfg.cost.matrix is not None:
        w = np.asarray(cfg.cost.matrix, dtype=np.float64)
        if w.shape != (n, n) or np.any(np.diag(w) != 0) or np.any(w < 0):
            raise ValueError(f"cost.matrix must be {n}×{n}, non-negative, with a zero diagonal")
        return w, {"source": "config"}
    counts = class_counts(train, n, cfg.cost.counts)
    w = cost_matrix_from_counts(counts, cfg.cost.power)
    info = {
        "source": f"training-set {cfg.cost.counts} counts",
        "formula": f"w_c = (n_max/n_c)^{cfg.cost.power} / max; W[i,j] = w_i (i != j), W[i,i] = 0",
        "counts": counts.tolist(),
    }
    return w, info


def load_samples(cfg: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    if cfg.data.datasets:
        classes = None if cfg.classes is None else ("background", *cfg.classes)
        # a point set with no typed mask set beside it keeps the classes of the starting weights
        init_from = cfg.init_from
        start = (lambda: load_checkpoint(init_from).class_names) if init_from is not None else None
        return read_mix(cfg.data.datasets, cfg.mpp, cfg.data.on_error, classes, start)
    root = Path(cfg.data.root)
    if cfg.data.format == "consep_patches":
        samples = read_consep_patches(root, on_error=cfg.data.on_error)
    else:
        from wsi_pipeline.datasets import read_common

        samples = read_common(root, on_error=cfg.data.on_error)
    if not samples:
        raise ValueError(f"{root}: no training samples found")
    return split_by_group(samples, cfg.data.val_fraction, cfg.data.split_seed)


def normalize_stain(cfg: TrainConfig, train: list[Sample], val: list[Sample]
                    ) -> tuple[list[Sample], list[Sample], dict | None]:
    """Fit the configured stain normaliser once and map train and val samples onto its target.

    Deterministic, so done at load time rather than per epoch; validation is normalised too, so
    its scores measure what inference (which applies the same target) will do. Returns the
    normaliser's JSON-able meta for the checkpoints, None without normalisation.
    """
    normalizer = build_normalizer(cfg.data.stain)
    if normalizer is None:
        return train, val, None
    meta = normalizer.to_meta()
    refs = [str(p) for p in cfg.data.stain.reference_images] or "Macenko's published reference"
    log.info("stain normalisation %s, target fitted on %s: %s", meta["method"], refs, meta["target"])
    return normalize_samples(train, normalizer), normalize_samples(val, normalizer), meta


def check_mpp(samples: list[Sample], mpp: float, tolerance: float = 0.05) -> None:
    """Refuse samples whose pixel size is off by more than `tolerance` (relative): a network
    trained at mixed scales learns the wrong nucleus sizes. mpp None = trust the config."""
    for s in samples:
        if s.mpp is not None and abs(s.mpp - mpp) > tolerance * mpp:
            source = s.meta.get("source", s.name)
            raise ValueError(
                f"sample {s.name} ({source}): mpp {s.mpp:g} differs from the configured mpp {mpp:g} "
                f"by more than {tolerance:.0%}; resample the data or set mpp to match"
            )


def _selection_score(row: dict, selection: list[str] | None) -> float:
    """Best epoch = highest mean of the `selection` scores, by default validation PQ and mPQ
    (segmentation and typing count equally); without validation, lowest training loss."""
    if selection is not None and all(f"val_{key}" in row for key in selection):
        return float(np.nanmean([row[f"val_{key}"] for key in selection]))
    if "val_pq" not in row:
        return -row["train_loss"]
    mpq = row.get("val_mpq", row["val_pq"])
    return float(np.nanmean([row["val_pq"], mpq]))


def _check_selection(cfg: TrainConfig, val: list[Sample]) -> None:
    """Refuse, before any epoch runs, a `selection` naming a score this run's validation will
    not produce (a typo, a dataset without held-out images, types of an untyped set)."""
    if cfg.selection is None or not val:
        return
    typed: dict[str, bool] = {}
    point_classes: dict[str, set[int]] = {}
    for s in val:
        name = s.meta.get(DATASET_KEY, "")
        typed[name] = typed.get(name, False) or s.type_map is not None
        if s.points is not None:
            labelled = s.points[:, 2]
            point_classes.setdefault(name, set()).update(int(c) for c in labelled[labelled > 0])
    names = {name: dict.fromkeys(score_names(t, cfg.model.n_types, point_classes.get(name)), 0.0)
             for name, t in typed.items()}
    if point_classes:
        names[POOLED] = {f"f1_{c}": 0.0 for c in range(1, cfg.model.n_types)}
    known = set(flatten_scores(names, prefix=""))
    unknown = [key for key in cfg.selection if key not in known]
    if unknown:
        raise ValueError(f"selection: {unknown} are not validation scores of this run; "
                         f"it has {sorted(known)}")


def _check_postproc(saved_cfg: dict, cfg: TrainConfig, best: tuple) -> None:
    """Warn when a resumed run scores with other post-processing than its earlier epochs: their
    scores, and so the best epoch so far, came from the settings in last.pt (defaults for runs
    from before `postproc:` existed in the training config)."""
    before = saved_cfg.get("postproc", PostprocConfig().model_dump(mode="json"))
    now = cfg.postproc.model_dump(mode="json")
    if before != now:
        changed = sorted(k for k in now if before.get(k) != now[k])
        log.warning("postproc settings changed since the earlier epochs (%s): their validation "
                    "scores, and best epoch %s, came from the previous settings", ", ".join(changed),
                    best[1])


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    o = cfg.optim
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "step":
        return 0.1 ** (epoch // o.step_epochs)
    floor = o.min_lr / o.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))


def _set_trainable_parts(net: MultiTaskNet, cfg: TrainConfig, epoch: int) -> None:
    """Freeze what this epoch does not train: the parts outside `optim.train_parts` (weights
    frozen and, after `net.train()`, BatchNorm statistics too, so their outputs stay exactly
    `init_from`'s) and, during `optim.freeze_encoder_epochs`, the encoders' weights."""
    parts = cfg.optim.train_parts
    encoders_on = epoch >= cfg.optim.freeze_encoder_epochs
    net.train()
    for name in NETWORK_PARTS:
        part = net.get_submodule(name)
        trains = parts is None or name in parts
        for p in part.parameters():
            p.requires_grad_(trains and (encoders_on or not name.startswith("encoders.")))
        if not trains:
            part.eval()


def _init_weights(net: MultiTaskNet, init_from: Path, cfg: TrainConfig, class_names: tuple[str, ...],
                  device: torch.device) -> dict:
    """Copy weights from `init_from` (`cfg.init_from`); a different architecture or class list
    would make the copied heads mean something else, so both must match exactly."""
    src = load_checkpoint(init_from, map_location=device)
    new_head = cfg.classes is not None and tuple(src.class_names) != tuple(class_names)
    if src.config.model_copy(update={"n_types": cfg.model.n_types} if new_head else {}) != cfg.model:
        raise CheckpointError(
            f"{cfg.init_from}: model {src.config.model_dump()} differs from the configured "
            f"{cfg.model.model_dump()}"
        )
    if tuple(src.class_names) != tuple(class_names) and not new_head:
        raise CheckpointError(
            f"{cfg.init_from}: classes {list(src.class_names)} differ from the data's "
            f"{list(class_names)} (set `classes` to train a new type head)"
        )
    state = src.net.state_dict()
    if new_head:
        # a new class list: the type head starts afresh, every other weight is init_from's
        state = {k: v for k, v in state.items() if not k.startswith(TYPE_HEAD + ".")}
        missing, _ = net.load_state_dict(state, strict=False)
        assert all(k.startswith(TYPE_HEAD + ".") for k in missing), missing
        log.info("type head %s replaced: classes %s -> %s", TYPE_HEAD, list(src.class_names[1:]),
                 list(class_names[1:]))
    else:
        net.load_state_dict(state)
    log.info("initialised weights from %s (sha256 %s)", cfg.init_from, src.sha256)
    return {"path": str(cfg.init_from), "sha256": src.sha256, "epoch": src.meta.get("epoch")}


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def _validate(net: torch.nn.Module, loader: DataLoader, device: torch.device, amp: torch.dtype | None,
              cw: torch.Tensor, cfg: TrainConfig, samples: list[Sample]) -> dict[str, float]:
    """Validation loss terms (on centre crops), plus the scores users care about (PQ, mPQ, F_d,
    F_c per type) on whole images of any size from the full prediction path: tiled network ->
    two-step watershed (with `cfg.postproc`) -> instance metrics."""
    net.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32,
                                                enabled=amp is not None):
        for batch in loader:
            batch = _to_device(batch, device, cfg.channels_last)
            total, terms = multitask_loss(net(batch["image"]), batch, cw, cfg.loss)
            k = batch["image"].shape[0]
            for name, value in {"loss": float(total), **terms}.items():
                sums[name] = sums.get(name, 0.0) + value * k
            n += k
    row = {f"val_{k}": v / max(n, 1) for k, v in sums.items()}
    tile, stride = validation_tiling(cfg.patch_size)
    scores = score_by_dataset(scoring_network(net, device), samples, n_types=cfg.model.n_types,
                              mpp=cfg.mpp, tile=tile,
                              stride=stride, batch_size=cfg.batch_size, device=device,
                              postproc=cfg.postproc)
    row.update(flatten_scores(scores))
    return row


def _train_sampler(cfg: TrainConfig, train: list[Sample], cost: np.ndarray,
                   gen: torch.Generator) -> WeightedRandomSampler | None:
    """Weighted draws for a mix or rare-class sampling; None = plain shuffling (one dataset, no
    boost: every image once per epoch). Draws come from `gen`, reseeded each epoch, so a
    resumed run draws the same crops."""
    strength = cfg.sampling.rare_class_strength
    if not cfg.data.datasets and strength == 0 and cfg.sampling.samples_per_epoch is None:
        return None
    boost = rare_class_boost(train, cost.max(axis=1), strength)  # row max of W = w_c
    weights = draw_weights(train, {d.name: d.weight for d in cfg.data.datasets}, boost)
    n = cfg.sampling.samples_per_epoch or len(train)
    shares: dict[str, float] = {}
    for s, p in zip(train, weights, strict=True):
        shares[s.meta.get(DATASET_KEY, "")] = shares.get(s.meta.get(DATASET_KEY, ""), 0.0) + p
    log.info("drawing %d crops per epoch; dataset shares %s; rare-class boost %.2f..%.2f",
             n, {k: round(v, 3) for k, v in shares.items()}, boost.min(), boost.max())
    # torch's stubs want a Sequence[float]; the sampler itself calls torch.as_tensor(weights,
    # dtype=torch.double), so the tensor passes through unchanged.
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),  # type: ignore[arg-type]
                                 n, replacement=True, generator=gen)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(run_dir / "history.csv", text.getvalue())
    _plot_curves(run_dir, history)


def _plot_curves(run_dir: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    score_keys = [k for k in ("val_pq", "val_mpq", "val_f_d") if k in history[-1]]
    fig, axes = plt.subplots(1, 2 if score_keys else 1, figsize=(10 if score_keys else 5, 4))
    axes = np.atleast_1d(axes)
    for key in ("train_loss", "val_loss"):
        axes[0].plot(epochs, [row.get(key, np.nan) for row in history], label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in score_keys:
        axes[1].plot(epochs, [row.get(key, np.nan) for row in history], label=key)
    if score_keys:
        axes[1].set_xlabel("epoch")
        axes[1].set_title("validation")
        axes[1].legend()
    fig.tight_layout()
    try:
        with atomic_path(run_dir / "curves.png") as tmp:
            fig.savefig(tmp, dpi=80, format="png")
    finally:
        plt.close(fig)


@dataclass
class _Data:
    """The (stain-normalised) training and validation samples and what follows from them."""

    train: list[Sample]
    val: list[Sample]
    class_names: tuple[str, ...]
    typed: bool  # a mix with typed and untyped sets: untyped ones do not train the type head
    stain_meta: dict | None


@dataclass
class _Model:
    """The network, what trains it, and its moving average (None without `optim.ema_decay`)."""

    net: MultiTaskNet
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: AveragedModel | None = None

    @property
    def kept(self) -> MultiTaskNet:
        """The weights that are validated and saved: the average where there is one."""
        if self.ema is None:
            return self.net
        kept = self.ema.module
        assert isinstance(kept, MultiTaskNet)
        return kept


@dataclass
class _Progress:
    """Where the run stands: the next epoch, the history so far, (best score, its epoch) and
    where the weights came from (last.pt's record on resume, `cfg.init_from`, or None)."""

    start_epoch: int
    history: list[dict]
    best: tuple
    init_info: dict | None


def train(
    cfg: TrainConfig,
    *,
    resume: bool = True,
    progress: bool = True,
    samples: tuple[list[Sample], list[Sample]] | None = None,
) -> TrainResult:
    """Train (or continue training) into `cfg.out_dir`; `samples` = (train, val) replaces reading
    cfg.data.root (cfg.data.stain still applies to them)."""
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU")
    device = resolve_device(cfg.device)
    amp = autocast_dtype(device) if cfg.amp else None
    torch.manual_seed(cfg.seed)

    data = _prepare_data(cfg, samples)
    data = _point_targets(cfg, data, run_dir, device)
    _check_selection(cfg, data.val)
    w, cost_info = cost_matrix(cfg, data.train)
    log.info("cost matrix (%s):\n%s", cost_info.get("formula", cost_info["source"]), np.round(w, 3))
    cw = torch.as_tensor(w, dtype=torch.float32, device=device)
    model = _build_model(cfg, device)
    last_path = run_dir / "last.pt"
    state = _resume_or_init(cfg, model, last_path if resume else None, data.class_names, device)
    train_ds, train_loader, val_loader, gen = _make_loaders(cfg, data, w, device)
    log.info("training on %d patches, validating on %d (groups never shared); device %s, amp %s",
             len(data.train), len(data.val), device, amp)

    if (cfg.validate_start and state.start_epoch == 0 and not state.history
            and val_loader is not None):
        # the starting weights' scores on the same validation, as history row "epoch 0": the
        # yardstick of a fine-tune (never written as best.pt). model.net, not model.kept: the
        # average holds the weights of before init_from until its first update.
        t0 = time.time()
        row = {"epoch": 0, "lr": 0.0, **_validate(model.net, val_loader, device, amp, cw, cfg,
                                                  data.val)}
        row["seconds"] = time.time() - t0
        state.history.append(row)
        _write_history(run_dir, state.history)
        log.info("epoch 0 (starting weights): %s", {k: round(v, 4) for k, v in row.items()})
    for epoch in range(state.start_epoch, cfg.epochs):
        t0 = time.time()
        train_ds.set_epoch(epoch)
        gen.manual_seed(cfg.seed * 100003 + epoch)
        row = _run_epoch(cfg, model, train_loader, epoch, device, amp, cw, progress)
        if val_loader is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            row.update(_validate(model.kept, val_loader, device, amp, cw, cfg, data.val))
        model.sched.step()
        row["seconds"] = time.time() - t0
        state.history.append(row)
        meta = {"train_config": cfg.model_dump(mode="json"), "cost_matrix": w.tolist(),
                "cost_info": cost_info, "epoch": epoch + 1, "metrics": row,
                "device": str(device), "amp": str(amp), "init_from": state.init_info,
                "stain": data.stain_meta}
        _save_checkpoints(cfg, run_dir, model, state, epoch, data.class_names, meta)
        _write_history(run_dir, state.history)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
    best_score, best_epoch = state.best
    epochs_done = sum(1 for row in state.history if row["epoch"] > 0)
    return TrainResult(run_dir, epochs_done, int(best_epoch), float(best_score), state.history)


def _prepare_data(cfg: TrainConfig, samples: tuple[list[Sample], list[Sample]] | None) -> _Data:
    """Read (or take) the train/val split, check its pixel size, stain-normalise it and find the
    class names, which must number `cfg.model.n_types`."""
    train_samples, val_samples = samples if samples is not None else load_samples(cfg)
    check_mpp(train_samples + val_samples, cfg.mpp)
    train_samples, val_samples, stain_meta = normalize_stain(cfg, train_samples, val_samples)
    typed_names = typed_class_names(train_samples + val_samples)
    class_names = typed_names or train_samples[0].class_names
    if len(class_names) != cfg.model.n_types:
        raise ValueError(
            f"data has {len(class_names)} classes {class_names} but model.n_types={cfg.model.n_types}"
        )
    return _Data(train_samples, val_samples, tuple(class_names), typed_names is not None, stain_meta)


def _point_targets(cfg: TrainConfig, data: _Data, run_dir: Path, device: torch.device) -> _Data:
    """Point-labelled images get their type targets on the instances that `points.instances_from`
    (default `init_from`) predicts (`training.point_instances`, cached)."""
    if not any(s.points is not None for s in data.train + data.val):
        return data
    checkpoint = cfg.points.instances_from or cfg.init_from
    if checkpoint is None:
        raise ValueError("point-labelled datasets need a segmentation checkpoint to outline the "
                         "marked nuclei: set init_from or points.instances_from")
    source = default_source(checkpoint, cfg.postproc, cfg.mpp, cfg.patch_size)
    cache = cfg.points.cache_dir or run_dir / "point_instances"
    # train and val in one call: the checkpoint is loaded and its network prepared once
    both = derive_point_targets(data.train + data.val, source, cache, device=device,
                                batch_size=cfg.batch_size, refresh=cfg.points.refresh,
                                disk_um=cfg.points.disk_um, snap_um=cfg.points.snap_um)
    n = len(data.train)
    return _Data(both[:n], both[n:], data.class_names, True, data.stain_meta)


def _build_model(cfg: TrainConfig, device: torch.device) -> _Model:
    """A freshly initialised network on `device` (from torch's seeded RNG), Adam, the schedule
    and, with `optim.ema_decay`, the average (BatchNorm statistics averaged too, since the
    averaged weights are evaluated with them). Its first update copies the weights after the
    first step, so a fine-tune averages from (nearly) `init_from`'s weights."""
    net = MultiTaskNet.from_config(cfg.model).to(device)
    if cfg.channels_last:
        # torch's stubs lack Module.to's memory_format keyword, which torch accepts.
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: _lr_factor(cfg, e))
    ema = None
    if cfg.optim.ema_decay > 0:
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.optim.ema_decay),
                            use_buffers=True)
    return _Model(net, opt, sched, ema)


def _resume_or_init(cfg: TrainConfig, model: _Model, last_path: Path | None,
                    class_names: tuple[str, ...], device: torch.device) -> _Progress:
    """Continue from `last_path` where it exists (weights, optimizer, schedule, RNG, history,
    best epoch); otherwise start at epoch 0, from `cfg.init_from`'s weights if set."""
    if last_path is not None and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=True)
        ts = state["train_state"]
        model.net.load_state_dict(ts.get("train_weights", state["state_dict"]))
        if model.ema is not None and "train_weights" in ts:
            model.ema.module.load_state_dict(state["state_dict"])
            model.ema.n_averaged.fill_(int(ts["ema_updates"]))
        model.opt.load_state_dict(state["train_state"]["optimizer"])
        model.sched.load_state_dict(state["train_state"]["scheduler"])
        torch.set_rng_state(state["train_state"]["rng"]["torch"])
        start_epoch = int(state["train_state"]["epoch"])
        best = tuple(state["train_state"]["best"])
        log.info("resumed from %s at epoch %d", last_path, start_epoch)
        resumed = _Progress(start_epoch, list(state["train_state"]["history"]), best,
                            state["meta"].get("init_from"))
        _check_postproc(state["meta"].get("train_config", {}), cfg, best)
        return resumed
    init_info = None
    if cfg.init_from is not None:
        init_info = _init_weights(model.net, cfg.init_from, cfg, class_names, device)
    return _Progress(0, [], (-math.inf, -1), init_info)


def _make_loaders(cfg: TrainConfig, data: _Data, cost: np.ndarray, device: torch.device
                  ) -> tuple[NucleusDataset, DataLoader, DataLoader | None, torch.Generator]:
    """The training dataset and loader (random crops, augmented, drawn from the returned
    generator, reseeded each epoch) and the validation loader (centre crops; None without
    validation samples)."""
    train_ds = NucleusDataset(data.train, Augmenter(cfg.augment), seed=cfg.seed,
                              patch_size=cfg.patch_size, crop="random",
                              ignore_untyped_nc=data.typed)
    val_ds = NucleusDataset(data.val, None, patch_size=cfg.patch_size, crop="center",
                            ignore_untyped_nc=data.typed)
    gen = torch.Generator()
    # Workers are NOT persistent: a persistent worker keeps the dataset copy it started with,
    # so set_epoch would never reach it and every epoch would repeat one augmentation.
    loader_kw: dict[str, Any] = {"num_workers": cfg.num_workers, "pin_memory": device.type == "cuda"}
    sampler = _train_sampler(cfg, data.train, cost, gen)
    train_loader = DataLoader(train_ds, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=True, generator=gen, **loader_kw)
    val_loader = DataLoader(val_ds, cfg.batch_size, shuffle=False, **loader_kw) if data.val else None
    return train_ds, train_loader, val_loader, gen


def _run_epoch(cfg: TrainConfig, model: _Model, loader: DataLoader, epoch: int, device: torch.device,
               amp: torch.dtype | None, cw: torch.Tensor, progress: bool) -> dict:
    """One pass of optimizer steps (at most `cfg.max_steps_per_epoch`); the history row so far:
    epoch, learning rate and mean training loss terms."""
    from tqdm import tqdm

    net, opt = model.net, model.opt
    _set_trainable_parts(net, cfg, epoch)
    sums: dict[str, float] = {}
    steps = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for batch in bar:
        batch = _to_device(batch, device, cfg.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = net(batch["image"])
        total, terms = multitask_loss(out, batch, cw, cfg.loss)
        if not torch.isfinite(total):
            bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
            raise NonFiniteLossError(
                f"epoch {epoch + 1}, step {steps + 1}: the training loss is not finite "
                f"({', '.join(bad) or 'total'}); lr {opt.param_groups[0]['lr']:g}. Training stopped; "
                "no checkpoint of this epoch was written (check optim.lr and the data)")
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if model.ema is not None:
            model.ema.update_parameters(net)
        for name, value in {"loss": float(total.detach()), **terms}.items():
            sums[name] = sums.get(name, 0.0) + value
        steps += 1
        bar.set_postfix(loss=f"{sums['loss'] / steps:.3f}")
        if cfg.max_steps_per_epoch and steps >= cfg.max_steps_per_epoch:
            break
    return {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
            **{f"train_{k}": v / max(steps, 1) for k, v in sums.items()}}


def _save_checkpoints(cfg: TrainConfig, run_dir: Path, model: _Model, state: _Progress, epoch: int,
                      class_names: tuple[str, ...], meta: dict) -> None:
    """best.pt when this epoch's selection score beats the best so far (`state.best` updated),
    then last.pt with everything a resumed run needs (with an average: the optimised weights
    and the number of updates beside the averaged ones it holds)."""
    score = _selection_score(state.history[-1], cfg.selection)
    if score > state.best[0]:
        state.best = (score, epoch + 1)
        save_checkpoint(run_dir / "best.pt", model.kept, class_names=class_names, mpp=cfg.mpp, meta=meta)
    train_state = {"optimizer": model.opt.state_dict(), "scheduler": model.sched.state_dict(),
                   "rng": {"torch": torch.get_rng_state()}, "epoch": epoch + 1,
                   "history": state.history, "best": list(state.best)}
    if model.ema is not None:
        train_state["train_weights"] = {k: v.detach().cpu().clone()
                                        for k, v in model.net.state_dict().items()}
        train_state["ema_updates"] = int(model.ema.n_averaged)
    save_checkpoint(run_dir / "last.pt", model.kept, class_names=class_names, mpp=cfg.mpp, meta=meta,
                    train_state=train_state)
