"""`wsi-pipeline convert`: turn an annotated dataset into the common layout that `read_common` reads."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_pipeline.datasets.readers import READERS

FORMATS = tuple(name for name in READERS if name != "common")


@click.command(name="convert")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Layout of SRC.")
@click.option("--merge-consep", is_flag=True, help="hovernet: merge CoNSeP's 7 classes into 4.")
@click.option("--mpp", type=float, default=None,
              help="Microns per pixel to record where the format does not say (default: per format).")
@click.option("--target-mpp", type=float, default=None,
              help="Resample every image (and its labels) to this pixel size, e.g. 0.25 for the "
              "shipped model; images of unknown mpp are refused. Default: keep each image's own.")
@click.option("--typed", is_flag=True, help="coco: keep the categories as nucleus types.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              help="A bad sample (named in the message) stops the run, or is skipped with a warning.")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
def command(fmt: str, merge_consep: bool, mpp: float | None, target_mpp: float | None, typed: bool,
            on_error: str, src: Path, dst: Path) -> None:
    """Convert SRC (a dataset in --format) to DST/images/*.png, DST/labels/*.npz, DST/classes.json."""
    from wsi_pipeline.datasets import readers
    from wsi_pipeline.datasets.common import write_common
    from wsi_pipeline.datasets.validate import SampleError

    kwargs: dict = {"on_error": on_error}
    if mpp is not None:
        kwargs["mpp"] = mpp
    if fmt == "hovernet":
        kwargs["merge_consep"] = merge_consep
    elif merge_consep:
        raise click.UsageError("--merge-consep applies to --format hovernet only")
    if fmt == "coco":
        kwargs["typed"] = typed
    elif typed:
        raise click.UsageError("--typed applies to --format coco only")
    try:
        samples = readers.READERS[fmt](src, **kwargs)
    except TypeError as exc:
        raise click.UsageError(f"--format {fmt}: {exc}") from exc
    except (SampleError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not samples:
        raise click.ClickException(f"no usable samples in {src}")
    if target_mpp is not None:
        from wsi_pipeline.datasets.rescale import to_mpp

        unknown = [s.name for s in samples if s.mpp is None]
        if unknown:
            raise click.ClickException(f"--target-mpp: pixel size unknown for {unknown[:3]}; "
                                       "give it with --mpp")
        samples = [to_mpp(s, target_mpp) for s in samples]
        kwargs["target_mpp"] = target_mpp
    write_common(samples, dst, source={"format": fmt, "src": str(src), "options": kwargs})
    n_inst = sum(int(s.inst_map.max()) for s in samples)
    classes = list(samples[0].class_names)
    click.echo(f"wrote {len(samples)} samples ({n_inst} nuclei, classes {classes}) to {dst}")
