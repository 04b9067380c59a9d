"""`wsi-pipeline finetune-types`: a lab's own nucleus types from QuPath annotations.

The recipe: `run` → open the slide and its nuclei.geojson.gz in QuPath → correct the classes
of some detections and/or click classified points on nuclei → export the objects as GeoJSON
beside the slide (same stem) → `finetune-types` → rerun with the new checkpoint. Only the type
decoder trains: the nuclei are found and outlined bit for bit as before.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from wsi_pipeline.config import ConfigError


def _class_map(path: Path | None) -> dict[str, str | None] | None:
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--class-map") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                             for k, v in data.items()):
        raise click.BadParameter(f"{path}: expected a mapping of QuPath class names to model "
                                 "class names (or null)", param_hint="--class-map")
    return data


@click.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), required=True,
              help="Run folder: best.pt (use it as a run config's `checkpoint`), last.pt, history.csv.")
@click.option("--class-map", "class_map_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="YAML: QuPath class name -> model class (or null: not a type label). "
              "Default: the names as they are (a corrected nuclei.geojson.gz uses the model's).")
@click.option("--classes", default=None,
              help="Comma-separated NEW class list replacing the type head (e.g. 'tumour,immune,"
              "stroma'); the class map then names QuPath classes onto these.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Starting weights (default: the shipped ones).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--samples-per-epoch", type=int, default=200, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of the slides held out for validation (by slide; crops of one slide "
              "when there is only one).")
@click.option("--slide-mpp", type=float, default=None, help="µm/px of slides whose files state none.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-steps-per-epoch", type=int, default=None, help="For smoke runs.")
def command(data_dir: Path, out_dir: Path, class_map_path: Path | None, classes: str | None,
            checkpoint: Path | None, epochs: int, samples_per_epoch: int, batch_size: int,
            val_fraction: float,
            slide_mpp: float | None, device: str, max_steps_per_epoch: int | None) -> None:
    """Fine-tune the type branch on slides in DATA_DIR with QuPath GeoJSON exports beside them."""
    from wsi_pipeline.datasets.qupath_geojson import read_labels, slide_pairs
    from wsi_pipeline.evaluation.points import MIN_CLASS_SUPPORT
    from wsi_pipeline.model.checkpoint import (
        CheckpointError,
        default_checkpoint_path,
        load_checkpoint,
    )
    from wsi_pipeline.training.config import TrainConfig
    from wsi_pipeline.training.loop import NonFiniteLossError, train

    if samples_per_epoch < batch_size:
        raise click.BadParameter(f"{samples_per_epoch} crops per epoch make no batch of {batch_size}",
                                 param_hint="--samples-per-epoch")
    try:
        start = checkpoint or default_checkpoint_path()
        base = load_checkpoint(start)
        pairs = slide_pairs(data_dir)
    except (CheckpointError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    new_classes = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    targets = new_classes or list(base.class_names[1:])
    class_map = _class_map(class_map_path)
    if class_map is None:  # names as they are: each must be one of the target classes
        try:
            found = sorted({n for _, g in pairs for n in read_labels(g)[1]})
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        unknown = [n for n in found if n not in targets]
        if unknown:
            raise click.ClickException(
                f"{data_dir}: QuPath classes {unknown} are not model classes {targets}: "
                "pass --class-map (name -> model class, or null)")
        class_map = {n: n for n in found}
    groups = sorted({s.stem for s, _ in pairs})
    n_val = round(len(groups) * val_fraction) if len(groups) > 1 else 0
    spec: dict[str, object] = {"name": "qupath", "format": "qupath-geojson", "root": str(data_dir),
            "class_map": class_map,
            "options": {"mpp": base.mpp, "group_by": "slide" if len(groups) > 1 else "crop",
                        **({"slide_mpp": slide_mpp} if slide_mpp else {})}}
    if n_val:
        spec["val_groups"] = groups[-n_val:]
    else:
        spec["val_fraction"] = val_fraction
    model = base.config.model_dump()
    if new_classes:
        model["n_types"] = len(new_classes) + 1
    try:
        cfg = TrainConfig.model_validate({
            "out_dir": str(out_dir), "init_from": str(start), "epochs": epochs, "device": device,
            "batch_size": batch_size,
            "mpp": base.mpp, "model": model, "classes": new_classes, "validate_start": True,
            "selection": ["qupath_f1_mean"], "max_steps_per_epoch": max_steps_per_epoch,
            "sampling": {"samples_per_epoch": samples_per_epoch, "rare_class_strength": 2.0},
            "optim": {"lr": 3e-4, "schedule": "cosine", "min_lr": 1e-5, "ema_decay": 0.99,
                      "train_parts": ["decoders.nc"]},
            "cost": {"counts": "instances"},
            "data": {"datasets": [spec]},
        })
    except ValueError as exc:
        raise click.ClickException(str(ConfigError(str(exc)))) from exc
    try:
        result = train(cfg)
    except (NonFiniteLossError, ValueError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from exc
    first = result.history[0] if result.history and result.history[0]["epoch"] == 0 else None
    before = f" (starting weights {first['val_qupath_f1_mean']:.3f})" if first else ""
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    score = best.get("val_qupath_f1_mean")
    click.echo(f"done: {result.epochs_done} epochs in {result.run_dir}; best epoch {result.best_epoch}"
               + (f", held-out mean F1 {score:.3f}{before} (over the classes with at least "
                  f"{MIN_CLASS_SUPPORT} held-out labels)" if score is not None else "")
               + f"\nuse it: `checkpoint: {result.run_dir / 'best.pt'}` in a run config")
