"""`wsi-pipeline evaluate`: score predicted instance files against ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.atomic import write_text_atomic


def _truth_files(true_dir: Path) -> dict[str, tuple[Path, Path | None]]:
    """stem → (instance file, type file or None) for the CoNSeP patch layout or HoVer-Net .mat."""
    from wsi_pipeline.evaluation.matio import consep_patch_files, is_consep_layout

    if is_consep_layout(true_dir):
        files: dict[str, tuple[Path, Path | None]] = dict(consep_patch_files(true_dir))
        return files
    return {p.stem: (p, None) for p in sorted(true_dir.glob("*.mat"))}


def _fmt(v: float | None) -> str:
    return "   nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _check_types(names: list[str], truth: Any, truth_path: Path, pred: Any,
                 pred_unnamed: set[int]) -> None:
    """Ground truth with a type id that `--types` does not name is refused: mPQ would silently
    average over the named types only (2 of 4 with `--types a,b`). Unnamed predicted types
    only warn (a model may know more classes than the dataset)."""
    if truth.types is not None:
        t = np.asarray(truth.types).reshape(-1)
        top = int(t.max()) if t.size else 0
        if top > len(names):
            raise click.ClickException(
                f"{truth_path}: ground truth has type id {top} but --types names {len(names)} "
                f"({','.join(names)}): name every type 1..{top}, or leave --types out"
            )
    if pred.types is not None:
        p = np.asarray(pred.types).reshape(-1)
        pred_unnamed.update(int(v) for v in np.unique(p) if v > len(names))


@click.command(help="Score predicted instances (HoVer-Net .mat) against ground truth.")
@click.option(
    "--pred",
    "pred_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <stem>.mat predictions (inst_map, inst_type, inst_centroid).",
)
@click.option(
    "--true",
    "true_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <stem>.mat ground truth, or a CoNSeP patch folder (inst/*.npy + type_mat/*.mat).",
)
@click.option(
    "--types",
    "type_names",
    default=None,
    help="Comma-separated names of type ids 1..K, e.g. 'other,inflammatory,epithelial,spindle'; "
    "it must name every type id of the ground truth (mPQ averages over exactly these types).",
)
@click.option(
    "--mpp",
    default=0.25,
    show_default=True,
    type=float,
    help="µm/px of the maps; scales the 12 px @ 0.25 µm/px centroid pairing radius.",
)
@click.option(
    "--out",
    "out_prefix",
    default=None,
    type=click.Path(path_type=Path),
    help="Output prefix for <prefix>.csv (per image) and <prefix>.json (summary). "
    "Default: PRED_DIR/evaluation.",
)
def command(
    pred_dir: Path, true_dir: Path, type_names: str | None, mpp: float, out_prefix: Path | None
) -> None:
    from wsi_pipeline.evaluation import DatasetEvaluator
    from wsi_pipeline.evaluation.matio import MatFileError, read_consep_patch, read_instance_mat

    names = [n.strip() for n in type_names.split(",")] if type_names else None
    truths = _truth_files(true_dir)
    if not truths:
        raise click.ClickException(f"no ground truth found in {true_dir}")
    ev = DatasetEvaluator(type_ids=list(range(1, len(names) + 1)) if names else None, mpp=mpp)
    missing = []
    pred_unnamed: set[int] = set()
    for stem, (inst_path, type_path) in truths.items():
        pred_path = pred_dir / f"{stem}.mat"
        if not pred_path.exists():
            missing.append(stem)
            continue
        try:
            truth = (
                read_consep_patch(inst_path, type_path)
                if inst_path.suffix == ".npy"
                else read_instance_mat(inst_path)
            )
            pred = read_instance_mat(pred_path)
        except MatFileError as exc:  # the message names the file
            raise click.ClickException(str(exc)) from exc
        if pred.inst_map.shape != truth.inst_map.shape:
            raise click.ClickException(
                f"{stem}: prediction {pred.inst_map.shape} vs truth {truth.inst_map.shape}"
            )
        if names:
            _check_types(names, truth, inst_path, pred, pred_unnamed)
        ev.add(stem, truth, pred)
    if missing:
        click.echo(
            f"warning: no prediction for {len(missing)} of {len(truths)} images "
            f"(first: {', '.join(missing[:5])})",
            err=True,
        )
    if not ev.rows:
        raise click.ClickException(f"no prediction in {pred_dir} matches a ground-truth file")
    if pred_unnamed:
        click.echo(
            f"warning: predictions have type id(s) {', '.join(map(str, sorted(pred_unnamed)))} that "
            f"--types does not name ({len(names or [])} types): they count as misclassified, not in mPQ",
            err=True,
        )

    summary = ev.summary()
    label = {i + 1: n for i, n in enumerate(names)} if names else {}
    click.echo(f"{len(ev.rows)} images")
    click.echo("  ".join(f"{k:>8s}" for k in ("Dice", "AJI", "AJI+", "DQ", "SQ", "PQ")))
    click.echo(
        "  ".join(f"{_fmt(summary[k]):>8s}" for k in ("dice", "aji", "aji_plus", "dq", "sq", "pq"))
    )
    if "mpq" in summary:
        click.echo(
            f"F_d {_fmt(summary['f_d'])}   type accuracy {_fmt(summary['type_acc'])}   "
            f"mPQ {_fmt(summary['mpq'])}"
        )
        click.echo(f"{'type':>16s}  {'PQ':>8s}  {'F_c':>8s}")
        for key in sorted(k for k in summary if k.startswith("pq_")):
            t = int(key[3:])
            click.echo(
                f"{label.get(t, str(t)):>16s}  {_fmt(summary[key]):>8s}  {_fmt(summary.get(f'f_c_{t}')):>8s}"
            )

    prefix = out_prefix or pred_dir / "evaluation"
    csv_path, json_path = Path(f"{prefix}.csv"), Path(f"{prefix}.json")
    write_text_atomic(csv_path, ev.per_image().to_csv(index=False))
    payload = {
        "summary": {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()
        },
        "type_names": {str(k): v for k, v in label.items()},
        "pred_dir": str(pred_dir),
        "true_dir": str(true_dir),
        "mpp": mpp,
        "missing_predictions": missing,
        "wsi_pipeline_version": __version__,
    }
    write_text_atomic(json_path, json.dumps(payload, indent=2))
    click.echo(f"wrote {csv_path} and {json_path}")
