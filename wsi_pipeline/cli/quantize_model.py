"""`wsi-pipeline quantize-model`: the int8 network of a checkpoint, for `infer.precision: int8`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="quantize-model")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training config whose training images (never its held-out ones) calibrate.")
@click.option("--crops", default=300, show_default=True, type=click.IntRange(min=1),
              help="Calibration crops of the training patch size, drawn evenly over the images.")
@click.option("--seed", default=0, show_default=True, type=int)
def command(checkpoint: Path, config_path: Path, crops: int, seed: int) -> None:
    """Quantise CHECKPOINT's network to int8 (model.quantize) and write it beside it as
    <stem>.int8.xml and .bin. Needs NNCF: pip install 'wsi-pipeline[int8]'."""
    try:
        import nncf  # noqa: F401
    except ImportError as exc:
        raise click.ClickException("quantize-model needs NNCF: pip install 'wsi-pipeline[int8]'") from exc
    from wsi_pipeline.config import load_config
    from wsi_pipeline.datasets.mix import read_mix
    from wsi_pipeline.model import CheckpointError, load_checkpoint
    from wsi_pipeline.model.quantize import (
        calibration_crops,
        int8_model_path,
        quantize_network,
        save_int8_model,
    )
    from wsi_pipeline.training.config import TrainConfig

    try:
        model = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    cfg = load_config(config_path, TrainConfig)
    train, _ = read_mix(cfg.data.datasets, cfg.mpp, "fail")
    samples = calibration_crops([s.image for s in train], crops, cfg.patch_size, seed)
    quantized = quantize_network(model.net.float().eval(), samples, model.sha256)
    dest = int8_model_path(checkpoint)
    save_int8_model(quantized, dest)
    click.echo(f"{dest}: int8 network of {checkpoint.name} (sha256 {model.sha256[:12]}), "
               f"calibrated on {len(samples)} crops of {len(train)} training images")
