"""`wsi-pipeline predict-tiles`: every image in a folder -> HoVer-Net .mat (+ overlay, other formats);
a shell around `wsi_pipeline.load_model` and `Model.segment`."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import click

from wsi_pipeline.api import TILE_MODE_BATCH_SIZE


@click.command(name="predict-tiles")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A `wsi-pipeline run` config (YAML, configs/run_default.yaml lists every key): "
              "its checkpoint, infer (tile_size, margin, stride, batch_size, device, precision) and "
              "postproc settings apply here; its other keys are checked but concern slides only. "
              "Flags replace the file's values.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Model checkpoint (default: the config's, else the weights shipped with the package).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True),
              help="Pixel size of the images in µm (default: the model's, no resampling).")
@click.option("--overlay", is_flag=True, help="Also write <stem>.png with contours coloured by type "
              "(refused where that is an input image: use another OUTPUT_DIR).")
@click.option("--geojson", is_flag=True, help="Also write <stem>.geojson.gz (QuPath detections; "
              "the same as adding geojson to --formats).")
@click.option("--formats", "formats_text", default="mat", show_default=True, metavar="LIST",
              help="Output formats, comma-separated: mat (HoVer-Net), geojson (QuPath), csv (one "
              "row per nucleus), geoparquet (<stem>.parquet, as a slide's nuclei.parquet).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the model runs  [default: the config's infer.device, else auto]")
@click.option("--batch-size", type=click.IntRange(min=1),
              help=f"Tiles per forward pass  [default: the config's infer.batch_size, else "
              f"{TILE_MODE_BATCH_SIZE}]")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Flip test-time augmentation: the network's mean over four flips of each tile "
              "(4x the network time; with the shipped weights +0.009 PQ on the CoNSeP and +0.005 "
              "to +0.03 on the other validation sets, see MODEL_CARD.md).")
@click.option("--match", "patterns", multiple=True, metavar="GLOB",
              help="Only images whose file name matches (repeatable), e.g. --match 'train_3_*'.")
def command(input_dir: Path, output_dir: Path, config_path: Path | None, checkpoint: Path | None,
            mpp: float | None, overlay: bool, geojson: bool, formats_text: str, device: str | None,
            batch_size: int | None, tta: bool, patterns: tuple[str, ...]) -> None:
    """Segment and classify nuclei in every image of INPUT_DIR; write OUTPUT_DIR/<stem>.mat
    (and the other --formats).

    Images whose stems clash (x.png, x.jpg) keep their extension in the output name
    (x.png.mat, x.jpg.mat); an output that would overwrite an input is an error before any work.
    Images of any size are tiled with overlap. An image that cannot be read or processed is
    reported by name and skipped; the exit status is non-zero only if every image failed.
    With --config, the tile grid and post-processing are the run config's, as `run` uses them.
    """
    from tqdm import tqdm

    from wsi_pipeline.api import load_model
    from wsi_pipeline.cohort.config import ConfigError, load_run_config
    from wsi_pipeline.export.formats import FormatError, parse_formats
    from wsi_pipeline.io import SlideReadError
    from wsi_pipeline.io.plain_image import IMAGE_SUFFIXES, read_rgb
    from wsi_pipeline.model import CheckpointError
    from wsi_pipeline.model.quantize import Int8ModelError
    from wsi_pipeline.model.runtime import RuntimeUnavailable
    from wsi_pipeline.tile_mode.outputs import OutputClash, plan_outputs
    from wsi_pipeline.tile_mode.predict import write_overlay

    all_images = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    images = all_images
    if patterns:
        images = [p for p in images if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    if not images:
        raise click.ClickException(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {input_dir}"
            + (f" matching {' or '.join(patterns)}" if patterns else "")
        )
    try:
        formats = parse_formats([*parse_formats(formats_text), *(["geojson"] if geojson else [])])
        outputs = plan_outputs(images, output_dir, formats=formats, overlay=overlay,
                               protected=all_images)
    except (FormatError, OutputClash) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        cfg = load_run_config(config_path, _overrides(checkpoint, device, batch_size))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if config_path is not None and {"mpp", "mpp_override"} & {
            k for k in cfg.model_fields_set if getattr(cfg, k) is not None}:
        click.echo(f"note: {config_path}'s mpp/mpp_override are for slides; images here are at "
                   "--mpp (default: the model's)", err=True)
    try:
        model = load_model(config=cfg)
    except (RuntimeUnavailable, ValueError, CheckpointError, Int8ModelError) as exc:
        raise click.ClickException(str(exc)) from exc
    output_dir.mkdir(parents=True, exist_ok=True)

    def process(path: Path) -> None:
        image = read_rgb(path)
        seg = model.segment(image, mpp, tta=tta, name=path.name)
        out = outputs[path]
        for name, file in out.files.items():
            seg.save(file, name, cfg.export)
        if out.overlay is not None:
            write_overlay(out.overlay, image, seg.labels, seg.nuclei["type_id"].to_numpy(),
                          model.predictor.model.class_colors)

    # One bad image (unreadable, odd shape, a writer failing on its result) must not cost the
    # rest of a folder: report it by name and go on; fail only when nothing was written.
    failed: list[str] = []
    for path in tqdm(images, unit="image", disable=len(images) < 2):
        try:
            process(path)
        except SlideReadError as exc:
            click.echo(f"skipped {path.name}: {exc.reason}", err=True)
            failed.append(path.name)
        except Exception as exc:  # noqa: BLE001 - per-image isolation, reported by name
            click.echo(f"failed {path.name}: {type(exc).__name__}: {exc}", err=True)
            failed.append(path.name)
    done = len(images) - len(failed)
    click.echo(f"{done} image(s) written to {output_dir}"
               + (f"; {len(failed)} skipped or failed: {', '.join(failed)}" if failed else ""))
    if done == 0:
        raise click.ClickException(f"all {len(images)} image(s) failed")


def _overrides(checkpoint: Path | None, device: str | None, batch_size: int | None) -> dict[str, Any]:
    """The flags given, as a nested dict over the config file (as `run` does)."""
    o: dict[str, Any] = {}
    if checkpoint is not None:
        o["checkpoint"] = str(checkpoint)
    infer = {k: v for k, v in (("device", device), ("batch_size", batch_size)) if v is not None}
    if infer:
        o["infer"] = infer
    return o
