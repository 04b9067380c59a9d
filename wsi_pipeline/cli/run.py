"""`wsi-pipeline run`: one slide or a whole cohort, resumable, on this machine or a Dask cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click


def _builtin_defaults() -> dict[str, str]:
    """What each flag falls back to with no --config file (shown by --help; a config file's
    values replace these, and flags replace both)."""
    from wsi_pipeline.cohort.config import RunConfig

    cfg = RunConfig()
    lo, hi = cfg.preflight.mpp_range
    on_off = {True: "on", False: "off"}
    return {
        "config": "none, the built-in settings of configs/run_default.yaml",
        "checkpoint": "the shipped weights",
        "mpp": "none, a slide without a pixel size stops the run",
        "mpp_override": "none, each file's metadata",
        "allow_unusual_mpp": f"{on_off[cfg.preflight.allow_unusual_mpp]}; plausible is {lo:g}-{hi:g} µm/px",
        "chunk_size": str(cfg.infer.chunk_size),
        "device": cfg.infer.device,
        "geojson": on_off[cfg.export.geojson],
        "formats": ",".join(cfg.export.formats) or "none, nuclei.parquet alone",
        "scheduler": "none, an embedded cluster on this machine",
        "workers": "sized to the machine; a single slide runs in this process",
        "retry_failed": on_off[cfg.retry_failed],
    }


_DEFAULTS = _builtin_defaults()


def _help(text: str, key: str) -> str:
    """`text` and the built-in default, as click's show_default writes it (without its
    parentheses around text defaults)."""
    return f"{text}  [default: {_DEFAULTS.get(key, key)}]"


@click.command("run")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (created if missing; its parent must exist).")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help=_help("Run config YAML (every key: configs/run_default.yaml, installed with "
                         "the package as wsi_pipeline/configs/run_default.yaml).", "config"))
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help=_help("Model checkpoint.", "checkpoint"))
@click.option("--mpp", type=float,
              help=_help("Fallback level-0 µm/px, used only for slides whose file has no pixel "
                         "size.", "mpp"))
@click.option("--mpp-override", type=float,
              help=_help("Level-0 µm/px for every slide, whatever its metadata says (for wrong "
                         "metadata).", "mpp_override"))
@click.option("--allow-unusual-mpp", is_flag=True, default=None,
              help=_help("Run slides whose pixel size is outside the plausible range.",
                         "allow_unusual_mpp"))
@click.option("--chunk-size", type=int,
              help=_help("Side of a Zarr map chunk / post-processing unit (pixels).", "chunk_size"))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
              help=_help("Where the model runs.", "device"))
@click.option("--geojson", is_flag=True, default=None,
              help=_help("Also write nuclei.geojson.gz (QuPath).", "geojson"))
@click.option("--formats", metavar="LIST",
              help=_help("Also write the nuclei in these formats, comma-separated: geojson "
                         "(nuclei.geojson.gz), csv (nuclei.csv, one row per nucleus).", "formats"))
@click.option("--scheduler",
              help=_help("Address tcp://HOST:PORT of a running Dask scheduler.", "scheduler"))
@click.option("--workers", type=int,
              help=_help("CPU workers of the embedded cluster (0 = no cluster, run in this "
                         "process).", "workers"))
@click.option("--slide-index", type=click.IntRange(min=0),
              help=_help("Run only the slide at this 0-based position of SOURCE (a list's rows, a "
                         "folder's sorted paths), e.g. $SLURM_ARRAY_TASK_ID: one slide per array "
                         "task, all into one OUT (the slide and manifest locks keep them apart); "
                         "no cohort summary, run `wsi-pipeline summarize OUT` after the last.",
                         "every slide of SOURCE"))
@click.option("--retry-failed", is_flag=True, default=None,
              help=_help("Rerun slides that failed before.", "retry_failed"))
@click.option("--dry-run", is_flag=True,
              help=_help("List what would run, flag unreadable and tissue-free slides.", "off"))
@click.option("--break-locks", is_flag=True,
              help=_help("Take over slide locks held by runs on other hosts (only when those runs "
                         "are dead; locks of dead runs on this host are taken over anyway).", "off"))
def command(source: Path, out_dir: Path, config_path: Path | None, dry_run: bool, break_locks: bool,
            slide_index: int | None = None, **options: Any) -> None:
    """Segment and classify every nucleus in SOURCE: a slide, a folder of slides (searched
    recursively) or a CSV/TSV list of slide paths. Rerunning resumes: finished stages are skipped,
    stages whose settings or model changed are redone.

    The defaults shown are the built-in settings; a --config file's values replace them, and
    flags replace both."""
    from wsi_pipeline.cohort.cluster import ClusterError
    from wsi_pipeline.cohort.config import ConfigError, load_run_config
    from wsi_pipeline.cohort.runner import CohortRunner, RunInterrupted, RunSetupError

    # Dask's INFO lines (workers joining, comms closing) drown the progress bar; the variable
    # is read when distributed is imported, here and in the worker processes it spawns.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        cfg = load_run_config(config_path, _overrides(options))
        if slide_index is not None:  # the array's last task cannot know it is last: no summary
            cfg = cfg.model_copy(update={"summarize": False})
        progress = _Progress()
        runner = CohortRunner(source, out_dir, cfg, on_event=progress, dry_run=dry_run,
                              break_locks=break_locks)
        if slide_index is not None:
            runner.entries = _one_slide(runner.entries, slide_index, source)
        if dry_run:
            _print_preview(runner)
            return
        try:
            report = runner.run()
        finally:
            progress.close()
    except (ConfigError, RunSetupError, ClusterError) as exc:
        raise click.ClickException(str(exc)) from exc
    except RunInterrupted as exc:  # SIGTERM/SIGINT: locks released, the shell's usual status
        click.echo(str(exc), err=True)
        sys.exit(128 + exc.signum)
    _print_report(report)
    if not report.ok:
        sys.exit(1)
    if report.blocked:  # nothing done, only because of other runs' locks: not a success
        sys.exit(3)


def _one_slide(entries: list[Any], index: int, source: Path) -> list[Any]:
    """The entry at `index` of SOURCE's slides (discovery order, the same in every array task)."""
    if index >= len(entries):
        last = f"0-{len(entries) - 1}" if entries else "none"
        raise click.ClickException(f"--slide-index {index}: {source} has {len(entries)} slide(s) "
                                   f"(indices {last})")
    return [entries[index]]


def _overrides(options: dict[str, Any]) -> dict[str, Any]:
    """CLI flags as a nested dict over the config file; unset flags leave the file's values."""
    o: dict[str, Any] = {}
    for key in ("checkpoint", "mpp", "mpp_override", "retry_failed"):
        if options.get(key) is not None:
            o[key] = str(options[key]) if key == "checkpoint" else options[key]
    infer = {k: options[k] for k in ("chunk_size", "device") if options.get(k) is not None}
    if infer:
        o["infer"] = infer
    export: dict[str, Any] = {}
    if options.get("geojson"):
        export["geojson"] = True
    if options.get("formats") is not None:  # checked, with the known names, by the config
        export["formats"] = [f for f in options["formats"].split(",") if f.strip()]
    if export:
        o["export"] = export
    if options.get("allow_unusual_mpp"):
        o["preflight"] = {"allow_unusual_mpp": True}
    cluster = {k: options[k] for k in ("scheduler", "workers") if options.get(k) is not None}
    if cluster:
        o["cluster"] = cluster
    return o


def _plural(n: int, word: str) -> str:
    """'1 slide', '2 slides', '0 slides'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Progress:
    """Overall bar over slides, with counters of done and failed slides; in cohort (Dask) mode
    also a bar per running slide stage (tiles of infer, chunks of postproc, with rate and ETA),
    fed by the stage tasks' progress events. In-process runs get the stage bars from the stages
    themselves.

    Lines printed while a bar is on screen go through tqdm.write, which clears the bars, prints
    the line and redraws them (click.echo would glue the line onto the bar).
    """

    def __init__(self) -> None:
        self.bar: Any = None  # the slides bar (tqdm), once the run is planned
        self.stage_bars: dict[str, Any] = {}  # slide id -> its running stage's bar
        self.running: dict[str, str] = {}  # slide id -> its running stage
        self.finished: set[str] = set()  # late progress events of these slides are dropped
        self.done = 0
        self.failed = 0

    def echo(self, text: str) -> None:
        if self.bar is not None and not self.bar.disable:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        for slide_id in list(self.stage_bars):
            self._close_stage(slide_id)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _close_stage(self, slide_id: str) -> None:
        bar = self.stage_bars.pop(slide_id, None)
        if bar is not None:
            bar.close()

    def _counters(self, last: str | None = None) -> None:
        if self.bar is None:
            return
        text = f"{self.done} done, {self.failed} failed"
        running = [f"{k}: {stage}" for k, stage in self.running.items()]
        if last:
            text += f"; {last}"
        elif running:
            text += f"; {', '.join(running[:3])}" + (" ..." if len(running) > 3 else "")
        self.bar.set_postfix_str(text)

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        if kind == "planned":
            locked = info.get("locked", 0)
            unreadable = info.get("unreadable", 0)
            done = info["total"] - info["todo"] - locked - unreadable
            self.echo(f"{_plural(info['total'], 'slide')}: {info['todo']} to run, {done} already finished"
                      + (f" ({info['skipped_failed']} failed before; --retry-failed reruns them)"
                         if info["skipped_failed"] else "")
                      + (f", {locked} skipped: locked by another run" if locked else "")
                      + (f", {unreadable} that do not open (recorded as failed)" if unreadable else ""))
            if info["todo"]:
                # Slides that failed before (not retried) and that do not open count as failed
                # from the start, so the bar ends with the final line's numbers.
                self.failed = info["skipped_failed"] + unreadable
                self.done = done - info["skipped_failed"]
                self.bar = tqdm(total=info["total"] - locked, initial=self.done + self.failed,
                                desc="slides", unit="slide")
                self._counters()
        elif kind == "cluster":
            where = "external Dask cluster" if info["external"] else "embedded Dask cluster"
            link = info["dashboard"] or info.get("dashboard_note") or "not available"
            self.echo(f"{where}: {info['infer_slots']} inference slot(s); dashboard: {link}")
        elif kind.startswith("stage_") and info["slide_id"] in self.finished:
            return
        elif kind == "stage_started" and self.bar is not None:
            self._close_stage(info["slide_id"])
            self.running[info["slide_id"]] = info["stage"]
            self._counters()
        elif kind == "stage_progress" and self.bar is not None:
            slide_id, desc = info["slide_id"], f"{info['slide_id']}: {info['stage']}"
            self.running[slide_id] = info["stage"]
            bar: Any = self.stage_bars.get(slide_id)
            if bar is not None and (bar.desc != desc or bar.total != info["total"]):
                self._close_stage(slide_id)
                bar = None
            if bar is None:
                # initial: the rate (and so the ETA) counts only what is done from now on
                bar = self.stage_bars[slide_id] = tqdm(total=info["total"], desc=desc,
                                                       initial=info["done"],
                                                       unit=info.get("unit", "it"), leave=False)
            bar.update(max(0, info["done"] - bar.n))
            bar.refresh()  # events come at most once a second a stage: draw each one
            if bar.n >= bar.total:
                self._close_stage(slide_id)
            self._counters()
        elif kind == "slide_done" and info["ran"] and self.bar is not None:
            row = info["row"]
            self._close_stage(row["slide_id"])
            self.running.pop(row["slide_id"], None)
            self.finished.add(row["slide_id"])
            if row["status"] == "failed":
                self.failed += 1
            else:
                self.done += 1
            self.bar.update(1)
            self._counters(f"{row['slide_id']}: {row['status']}")
            if self.bar.n >= self.bar.total:
                self.close()


def _print_preview(runner: Any) -> None:
    from wsi_pipeline.cohort.preview import preview, run_checks

    items = preview(runner)
    for it in items:
        stages = ",".join(it.todo) if it.todo else "-"
        extra = f"  tissue {it.tissue_mm2:.2f} mm²" if it.tissue_mm2 is not None else ""
        if it.mpp is not None:
            extra += f"  mpp {it.mpp:g} ({it.mpp_source})"
        flag = f"  [{it.flag}]" if it.flag else ""
        click.echo(f"{it.slide_id}\t{it.state}\tstages: {stages}{extra}{flag}\t{it.path}")
    n_todo = sum(bool(it.todo) for it in items)
    n_flag = sum(it.flag is not None for it in items)
    for note in run_checks(runner, items):
        click.echo(note, err=True)
    click.echo(f"dry run: {_plural(len(items), 'slide')}, {n_todo} would run, {n_flag} flagged",
               err=True)


def _print_report(report: Any) -> None:
    from collections import Counter

    counts = Counter(r["status"] for r in report.rows)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    click.echo(f"{_plural(len(report.rows), 'slide')} ({parts}) in {report.seconds:.1f} s; "
               f"manifest: {report.out_dir / 'manifest.parquet'}", err=True)
    if report.summary_path is not None:
        click.echo(f"cohort summary: {report.summary_path}", err=True)
        if (report.out_dir / "report.html").is_file():  # written with the summary (cohort.report)
            click.echo(f"cohort report: {report.out_dir / 'report.html'}", err=True)
    for line in report.locked_lines():
        click.echo(f"SKIPPED {line}", err=True)
    if report.locked:
        click.echo("a slide locked by a run that is dead is taken over by the next run on the same "
                   "host; from another host rerun with --break-locks", err=True)
    if getattr(report, "blocked", False):
        click.echo(report.blocked_line(), err=True)
    for line, row in zip(report.failure_lines(), report.failures, strict=True):
        where = f" (traceback: {report.out_dir / row['log']})" if row.get("log") else ""
        click.echo(f"FAILED {line}{where}", err=True)
    for line in getattr(report, "disk_full", ()):  # what a full disk stopped (cohort.runner)
        click.echo(line, err=True)
    for row in report.rows:
        if row.get("qc"):
            click.echo(f"QC {row['slide_id']}: {row['qc']} (see its summary.json and log)", err=True)
