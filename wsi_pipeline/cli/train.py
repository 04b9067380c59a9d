"""`wsi-pipeline train`: train the multi-task network from a YAML config."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.config import ConfigError, load_config
from wsi_pipeline.training.config import TrainConfig


@click.command(name="train")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Training YAML (see configs/train_*.yaml).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (overrides out_dir in the config).")
@click.option("--epochs", type=int, default=None, help="Total epochs (overrides the config).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--max-steps-per-epoch", type=int, default=None,
              help="Stop each epoch after this many steps (smoke runs; overrides the config).")
@click.option("--no-resume", is_flag=True, help="Start afresh even if the run directory has last.pt.")
def command(config_path: Path, out_dir: Path | None, epochs: int | None, device: str | None,
            max_steps_per_epoch: int | None, no_resume: bool) -> None:
    """Train, validate each epoch, keep best.pt and last.pt; resumes from last.pt."""
    from wsi_pipeline.training.loop import NonFiniteLossError, train

    overrides = {k: v for k, v in {"out_dir": out_dir and str(out_dir), "epochs": epochs,
                                    "device": device,
                                    "max_steps_per_epoch": max_steps_per_epoch}.items()
                 if v is not None}
    try:
        cfg = load_config(config_path, TrainConfig, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        result = train(cfg, resume=not no_resume)
    except NonFiniteLossError as exc:
        raise click.ClickException(f"{config_path}: {exc}") from exc
    click.echo(f"done: {result.epochs_done} epochs in {result.run_dir}; best epoch {result.best_epoch}")
