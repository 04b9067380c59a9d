"""The `wsi-pipeline` command line: one group, one module per subcommand.

Subcommands are imported only when invoked, so `wsi-pipeline --help` does not pay for
importing torch, dask and OpenSlide.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from wsi_pipeline import __version__

_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("wsi_pipeline.cli.run", "Segment and classify nuclei in one slide or a cohort."),
    "predict-tiles": ("wsi_pipeline.cli.predict_tiles", "Segment nuclei in plain images (tile mode)."),
    "evaluate": ("wsi_pipeline.cli.evaluate", "Score predicted instances against ground truth."),
    "train": ("wsi_pipeline.cli.train", "Train the multi-task network."),
    "finetune-types": ("wsi_pipeline.cli.finetune_types",
                       "A lab's own nucleus types from QuPath GeoJSON exports (type branch only)."),
    "convert": ("wsi_pipeline.cli.convert", "Convert annotated datasets to the common layout."),
    "fit-type-offsets": ("wsi_pipeline.cli.fit_type_offsets",
                         "Fit per-class type-logit offsets on a training mix's training images."),
    "export-model": ("wsi_pipeline.cli.export_model", "Write a lean (fp16) copy of a checkpoint."),
    "quantize-model": ("wsi_pipeline.cli.quantize_model", "Write a checkpoint's int8 network (OpenVINO)."),
    "summarize": ("wsi_pipeline.cli.summarize", "Cohort-level statistics from finished runs."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _SUBCOMMANDS:
            return None
        module = importlib.import_module(_SUBCOMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in sorted(_SUBCOMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class ConsoleHandler(logging.Handler):
    """Log lines on stderr that never glue onto a progress bar: tqdm.write clears the bars on
    screen, prints the line and redraws them. The stream is looked up at each line, so a
    redirected sys.stderr (tests, notebooks) gets the lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def log_level(verbose: int) -> int:
    """No flag: warnings only; -v: progress (INFO); -vv or more: DEBUG."""
    return logging.WARNING - 10 * min(verbose, 2)


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="wsi-pipeline")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Find, outline and classify every nucleus in H&E whole-slide images."""
    # The handler has the level too: slide logs raise the package's level to INFO while they
    # are open (cohort.tasks.log_to_file), and those records reach the root's handlers as well.
    console = ConsoleHandler(level=log_level(verbose))
    logging.basicConfig(level=log_level(verbose), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[console])
