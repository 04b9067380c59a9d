"""`wsi-pipeline summarize OUT`: cohort tables and a composition plot from a finished run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("summarize")
@click.argument("out_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--no-plot", is_flag=True, help="Skip the PNG composition plot.")
@click.option("--no-report", is_flag=True, help="Skip the HTML cohort report.")
def command(out_dir: Path, no_plot: bool, no_report: bool) -> None:
    """Write OUT/cohort_summary.parquet (slide × nucleus type: count, density per mm² of tissue,
    mean area, mean type probability, the slide's QC flags), OUT/cohort_composition.png and
    OUT/report.html (a row per slide with thumbnail, QC sheet link, status, QC flags, nuclei,
    tissue mm² and per-type density; opens from disk)."""
    from wsi_pipeline.cohort.layout import UnsafeSlideId
    from wsi_pipeline.cohort.summarize import summarize_cohort

    try:
        result = summarize_cohort(out_dir, plot=not no_plot, report=not no_report)
    except (FileNotFoundError, UnsafeSlideId) as exc:
        raise click.ClickException(str(exc)) from exc
    n_slides = result.table["slide_id"].nunique() if not result.table.empty else 0
    click.echo(f"{n_slides} slides, {len(result.table)} rows -> {result.table_path}")
    if result.plot_path is not None:
        click.echo(f"composition plot -> {result.plot_path}")
    if result.report_path is not None:
        click.echo(f"cohort report -> {result.report_path}")
    if result.qc_flagged:
        click.echo(f"{len(result.qc_flagged)} slide(s) flagged by QC (results that look implausible):")
        for slide_id, flags in sorted(result.qc_flagged.items()):
            click.echo(f"  {slide_id}: {flags}")
    if result.missing:
        raise click.ClickException(
            f"{len(result.missing)} finished slide(s) left out, their nuclei.parquet is missing or damaged: "
            f"{', '.join(result.missing)}; rerun `wsi-pipeline run` with this output folder to rebuild them"
        )
