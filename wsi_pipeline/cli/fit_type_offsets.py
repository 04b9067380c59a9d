"""`wsi-pipeline fit-type-offsets`: per-class offsets of the type logits fitted on the training
images of a training config (`training.type_offsets`), written into a copy of the checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

log = logging.getLogger(__name__)


@click.command(name="fit-type-offsets")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Training config whose datasets' TRAINING images fit the offsets "
              "(their held-out images are not used).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The checkpoint with the offsets in its type head (never CHECKPOINT itself).")
@click.option("--rare-class", default="other", show_default=True,
              help="The class whose pooled F1 counts beside the datasets' mean F1.")
@click.option("--fp32", is_flag=True, help="Keep fp32 weights (default: fp16 storage, as shipped).")
def command(checkpoint: Path, config_path: Path, out: Path, rare_class: str, fp32: bool) -> None:
    """Fit per-class type-logit offsets for CHECKPOINT on the training images of --config."""
    import numpy as np

    from wsi_pipeline.cli.export_model import _same_file
    from wsi_pipeline.config import load_config
    from wsi_pipeline.datasets.mix import read_mix
    from wsi_pipeline.evaluation.scoring import validation_tiling
    from wsi_pipeline.model import CheckpointError, load_checkpoint, save_checkpoint
    from wsi_pipeline.training.config import TrainConfig
    from wsi_pipeline.training.scoring_net import scoring_network
    from wsi_pipeline.training.type_offsets import (
        add_offsets,
        collect_evidence,
        fit_offsets,
    )

    if _same_file(checkpoint, out):
        raise click.ClickException(f"{out} is CHECKPOINT itself: give --out another name")
    try:
        model = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    cfg = load_config(config_path, TrainConfig)
    if rare_class not in model.class_names[1:]:
        raise click.BadParameter(f"{rare_class!r} is not one of the model's classes "
                                 f"{list(model.class_names[1:])}", param_hint="--rare-class")
    if abs(cfg.mpp - model.mpp) > 1e-6:
        raise click.ClickException(f"{config_path}: mpp {cfg.mpp} but {checkpoint} works at {model.mpp}")
    train, _ = read_mix(cfg.data.datasets, cfg.mpp, "fail", model.class_names)
    tile, stride = validation_tiling(cfg.patch_size)
    net = scoring_network(model.net, model.net.mean.device)
    log.info("fitting type offsets for %s (sha256 %s) on the training images of %s",
             checkpoint, model.sha256[:12], config_path)
    evidence = collect_evidence(net, train, n_types=model.config.n_types, mpp=cfg.mpp, tile=tile,
                                stride=stride, postproc=cfg.postproc)
    rare = model.class_names.index(rare_class)
    offsets, trail = fit_offsets(evidence, rare)
    start, end = trail[0]["objective"], trail[-1]["objective"]
    per_set = {name: c.scores() for name, c in evidence.counts(offsets).items()}
    add_offsets(model.net, offsets)
    meta = dict(model.meta)
    meta["type_offsets"] = {
        "offsets": dict(zip(model.class_names, np.round(offsets, 4).tolist(), strict=True)),
        "from": {"file": checkpoint.name, "sha256": model.sha256},
        "fitted_on": {"config": str(config_path), "images": "training split",
                      "datasets": evidence.datasets, "rare_class": rare_class},
        "objective": {"start": round(start, 4), "end": round(end, 4)},
    }
    sha = save_checkpoint(out, model.net, class_names=model.class_names, mpp=model.mpp,
                          class_colors=model.class_colors, meta=meta, half=not fp32)
    click.echo(json.dumps({"offsets": meta["type_offsets"]["offsets"], "objective_start": start,
                           "objective_end": end, "training_scores": per_set},
                     indent=1))
    click.echo(f"{out}: sha256 {sha}")
