"""`wsi-pipeline export-model`: turn a training checkpoint into a lean one for shipping."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="export-model")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fp32", is_flag=True, help="Keep fp32 weights (default: fp16 storage, half the size).")
def command(source: Path, dest: Path, fp32: bool) -> None:
    """Copy SOURCE's weights and metadata (no optimizer state) to DEST; print its sha256."""
    from wsi_pipeline.model import CheckpointError, load_checkpoint, save_checkpoint

    if _same_file(source, dest):  # the fp32 training checkpoint would be replaced by its copy
        raise click.ClickException(f"{dest} is SOURCE itself ({source}): export-model never writes over "
                                   "its input; give DEST another name")
    try:
        model = load_checkpoint(source)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    meta = {k: v for k, v in model.meta.items()}
    meta["exported_from"] = {"file": source.name, "sha256": model.sha256}
    sha = save_checkpoint(dest, model.net, class_names=model.class_names, mpp=model.mpp,
                          class_colors=model.class_colors, meta=meta, half=not fp32)
    size_mb = dest.stat().st_size / 1e6
    click.echo(f"{dest}: {size_mb:.1f} MB, sha256 {sha}")


def _same_file(source: Path, dest: Path) -> bool:
    """Whether DEST names SOURCE's file: the same path, a link to it or a hard link."""
    if source.absolute() == dest.absolute() or source.resolve() == dest.resolve():
        return True
    try:
        return source.samefile(dest)
    except OSError:  # DEST does not exist yet
        return False
