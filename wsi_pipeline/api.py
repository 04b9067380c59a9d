"""The Python API: segment images in memory, process a slide, run a cohort.

Four names do everything the command line does, and the commands are shells around them:

    model = wsi_pipeline.load_model()                  # shipped weights; device, precision,
    seg = model.segment(image, mpp=0.5)                # back end decided once (model.runtime)
    seg.nuclei                                         # GeoDataFrame, nuclei.parquet's columns
    wsi_pipeline.process_slide("a.svs", "out/")        # = wsi-pipeline run a.svs -o out/
    wsi_pipeline.run_cohort("slides/", "out/", client=client)

`config` is a `wsi-pipeline run` configuration: a `RunConfig`, the path of its YAML
(configs/run_default.yaml lists every key) or None for the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_pipeline import __version__
from wsi_pipeline.cohort.config import RunConfig, load_run_config
from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.inference.config import InferConfig

if TYPE_CHECKING:  # imported where used: `import wsi_pipeline.api` loads neither torch nor pyarrow
    import geopandas as gpd  # type: ignore[import-untyped]  # no stubs installed
    import pyarrow as pa

    from wsi_pipeline.cohort.runner import RunReport
    from wsi_pipeline.export.formats.base import Nuclei
    from wsi_pipeline.model.predictors import Predictor
    from wsi_pipeline.model.runtime import Runtime

__all__ = ["Model", "ProcessingError", "Segmentation", "load_model", "nuclei_frame",
           "process_slide", "run_cohort"]

#: Tiles per forward pass in tile mode where the config does not set infer.batch_size (the
#: slide engine's default, 16, is sized for its reading/writing overlap, not for one image).
TILE_MODE_BATCH_SIZE = 8

ConfigLike = RunConfig | str | os.PathLike[str] | None


class ProcessingError(RuntimeError):
    """A slide failed; the message names it, the stage, the error and its log file."""


def _config(config: ConfigLike) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    return load_run_config(None if config is None else Path(config))


@dataclass(frozen=True)
class Segmentation:
    """What `Model.segment` found in one image.

    Attributes
    ----------
    nuclei : geopandas.GeoDataFrame
        One row per nucleus with the columns of nuclei.parquet (`contract.nuclei_schema`);
        coordinates and outlines in the image's pixels, sizes in µm.
    labels : numpy.ndarray
        (H, W) int32 instance map: the `nucleus_id` of each pixel, 0 for background.
    maps : dict of str to numpy.ndarray or None
        With ``maps=True``: the network's float32 maps in the image's pixels, "ns" (H, W)
        nucleus probability, "hv" (2, H, W) distances, "nc" (C, H, W) type softmax.
    output : Nuclei
        The same nuclei as the output formats write them (`save`).
    """

    nuclei: gpd.GeoDataFrame
    labels: np.ndarray
    maps: dict[str, np.ndarray] | None
    output: Nuclei

    def save(self, path: str | os.PathLike[str], format: str | None = None,
             settings: ExportConfig | None = None) -> Path:
        """Write the nuclei to `path` in an output format (`export.formats`), as
        `predict-tiles --formats` does.

        Parameters
        ----------
        path : path
            The file; its name without the format's suffix identifies the image (GeoJSON
            object ids).
        format : {"geoparquet", "geojson", "mat", "csv"}, optional
            None: the one whose suffix `path` ends with.
        settings : ExportConfig, optional
            GeoJSON decimals and cell objects (a run config's `export` section).

        Returns
        -------
        pathlib.Path

        Examples
        --------
        >>> import numpy as np, tempfile, pathlib, wsi_pipeline
        >>> seg = wsi_pipeline.load_model(device="cpu").segment(np.full((64, 64, 3), 235, np.uint8))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     seg.save(pathlib.Path(tmp) / "glass.csv").read_text().split(",")[:3]
        ['"nucleus_id"', '"x"', '"y"']
        """
        from dataclasses import replace

        from wsi_pipeline.export.formats import FORMATS, FormatError
        from wsi_pipeline.export.formats.base import output_format

        path = Path(path)
        if format is None:
            found = [n for n in FORMATS if path.name.endswith(output_format(n).suffix)]
            if not found:
                raise FormatError(f"{path}: no output format ends so; name one of {', '.join(FORMATS)}")
            format = found[0]
        fmt = output_format(format, settings)
        fmt.write(replace(self.output, source_id=path.name.removesuffix(fmt.suffix)), path)
        return path


class Model:
    """A checkpoint ready to segment images; made by `load_model`.

    Attributes
    ----------
    predictor : Predictor
        The prepared network (`model.predictors`).
    config : RunConfig
        The settings it segments with: `infer` (tile grid, batch size) and `postproc`.
    """

    def __init__(self, predictor: Predictor, config: RunConfig) -> None:
        self.predictor = predictor
        self.config = config

    @property
    def class_names(self) -> tuple[str, ...]:
        """The type names, background first."""
        return tuple(self.predictor.model.class_names)

    @property
    def mpp(self) -> float:
        """The pixel size (µm) the network was trained at."""
        return float(self.predictor.model.mpp)

    @property
    def runtime(self) -> Runtime:
        """Device, precision and back end, as decided by `load_model`."""
        return self.predictor.runtime

    def __repr__(self) -> str:
        m = self.predictor.model
        return (f"Model({m.path.name}, sha256 {m.sha256[:12]}, {self.runtime.predictor} on "
                f"{self.runtime.device}, {len(self.class_names) - 1} types)")

    def segment(self, image: np.ndarray, mpp: float | None = None, *, tta: bool = False,
                maps: bool = False, name: str = "image") -> Segmentation:
        """Find, outline and classify the nuclei of an RGB image, as `predict-tiles` does.

        Parameters
        ----------
        image : numpy.ndarray
            (H, W, 3) uint8 RGB, any size (tiled with overlap).
        mpp : float, optional
            The image's pixel size in µm; None: the model's (no resampling). Another size is
            resampled for the network, and everything returned is in the image's own pixels.
        tta : bool
            Average the network over four flips (4x the time; `predict-tiles` does unless
            ``--no-tta``, `run` never does).
        maps : bool
            Also return the network's maps.
        name : str
            How log messages call the image.

        Returns
        -------
        Segmentation

        Examples
        --------
        >>> import numpy as np, wsi_pipeline
        >>> model = wsi_pipeline.load_model(device="cpu")
        >>> image = np.full((128, 128, 3), 235, np.uint8)  # blank glass
        >>> seg = model.segment(image, mpp=0.25, maps=True)
        >>> len(seg.nuclei), seg.labels.shape, seg.maps["nc"].shape
        (0, (128, 128), (5, 128, 128))
        """
        from wsi_pipeline.export.formats.base import Nuclei
        from wsi_pipeline.postproc.measure import nucleus_table
        from wsi_pipeline.tile_mode.predict import instances_from_maps, predict_maps

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name}: expected a uint8 (H, W, 3) RGB image, got {image.dtype} "
                             f"{image.shape}")
        infer = self.config.infer
        raw = predict_maps(self.predictor, image, image_mpp=mpp, tile=infer.tile_size,
                           stride=infer.effective_stride, batch_size=infer.batch_size, tta=tta,
                           name=name)
        result = instances_from_maps(self.predictor, raw, mpp, self.config.postproc)
        image_mpp = self.mpp if mpp is None else float(mpp)
        table = nucleus_table(result.inst_map, result.types, result.type_probs,
                              class_names=self.class_names, mpp=image_mpp)
        labels = result.inst_map.astype(np.int32, copy=False)
        model = self.predictor.model
        output = Nuclei.from_table(
            table, source_id=name, class_names=self.class_names, class_colors=model.class_colors,
            level0_mpp=image_mpp, labels=labels, type_probs=result.type_probs,
            provenance={"model_sha256": model.sha256, "wsi_pipeline_version": __version__,
                        "mpp": image_mpp})
        return Segmentation(nuclei_frame(table), labels, raw if maps else None, output)


def load_model(checkpoint: str | os.PathLike[str] | None = None, *, device: str | None = None,
               precision: str | None = None, backend: str | None = None,
               config: ConfigLike = None) -> Model:
    """Load a checkpoint and prepare its network once for this machine.

    Parameters
    ----------
    checkpoint : path, optional
        A checkpoint file; None: the config's, else the weights shipped with the package.
    device : {"auto", "cpu", "cuda"}, optional
        None: the config's ``infer.device`` (default "auto": the GPU when there is one).
    precision : {"auto", "fp32", "bf16", "fp16", "int8"}, optional
        None: the config's ``infer.precision`` (default "auto").
    backend : {"auto", "torch", "openvino"}, optional
        The network back end; None: the config's ``infer.backend`` (default "auto": OpenVINO
        on the CPU where it is installed).
    config : RunConfig or path, optional
        Tile grid, batch size and post-processing (as `predict-tiles --config`).

    Returns
    -------
    Model

    Raises
    ------
    wsi_pipeline.model.CheckpointError
        The checkpoint is missing or unreadable (the message names it).
    wsi_pipeline.model.runtime.RuntimeUnavailable
        The device or back end asked for is not on this machine.

    Examples
    --------
    >>> import wsi_pipeline
    >>> model = wsi_pipeline.load_model(device="cpu", backend="torch")
    >>> model.class_names[1:], model.mpp, model.runtime.backend
    (('other', 'inflammatory', 'epithelial', 'spindle'), 0.25, 'torch')
    """
    from wsi_pipeline.model import default_checkpoint_path, load_checkpoint
    from wsi_pipeline.model.predictors import load_predictor
    from wsi_pipeline.model.runtime import choose_runtime

    cfg = _config(config)
    settings = {k: v for k, v in (("device", device), ("precision", precision), ("backend", backend))
                if v is not None}
    infer = cfg.infer.model_copy(update=settings)
    if "batch_size" not in cfg.infer.model_fields_set:
        infer = infer.model_copy(update={"batch_size": TILE_MODE_BATCH_SIZE})
    infer = InferConfig.model_validate(infer.model_dump())  # the words checked as in a config file
    path = Path(checkpoint) if checkpoint is not None else cfg.checkpoint or default_checkpoint_path()
    runtime = choose_runtime(infer.device, infer.precision, infer.backend)
    loaded = load_checkpoint(path, map_location=str(runtime.device))
    cfg = cfg.model_copy(update={"infer": infer, "checkpoint": path})
    return Model(load_predictor(loaded, runtime), cfg)


def nuclei_frame(table: pa.Table) -> gpd.GeoDataFrame:
    """A nucleus table (nuclei.parquet's Arrow table) as a GeoDataFrame, as
    ``geopandas.read_parquet`` reads nuclei.parquet: the outlines as its geometry, without the
    bbox column (the file's GeoParquet covering).

    Parameters
    ----------
    table : pyarrow.Table

    Returns
    -------
    geopandas.GeoDataFrame
    """
    import geopandas as gpd

    frame = table.drop_columns([c for c in ("bbox",) if c in table.column_names]).to_pandas()
    frame["geometry"] = gpd.GeoSeries.from_wkb(frame["geometry"])
    return gpd.GeoDataFrame(frame, geometry="geometry")


def process_slide(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  config: ConfigLike = None) -> Path:
    """Run one slide through every stage, as ``wsi-pipeline run SLIDE -o OUT`` does.

    Resumable: finished stages are skipped, stages whose settings or model changed are redone.

    Parameters
    ----------
    path : path
        A slide file (any format `wsi-pipeline run` reads).
    out_dir : path
        The output folder; the slide's results go to ``out_dir/<slide id>/``.
    config : RunConfig or path, optional
        A `wsi-pipeline run` config.

    Returns
    -------
    pathlib.Path
        The slide's folder (nuclei.parquet, summary.json, overlay.png, qc/).

    Raises
    ------
    ProcessingError
        The slide failed; the message names the stage, the error and the log with its traceback.
    """
    report = run_cohort(path, out_dir, config=config)
    (row,) = report.rows
    return Path(report.out_dir) / str(row["slide_id"])


def run_cohort(slides: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
               out_dir: str | os.PathLike[str], *, config: ConfigLike = None,
               client: Any = None) -> RunReport:
    """Run every slide of a cohort, as ``wsi-pipeline run`` does, resumably.

    Parameters
    ----------
    slides : path or sequence of paths
        A slide, a folder of slides (searched recursively), a CSV/TSV/TXT list of slide paths,
        or the paths themselves (written to ``out_dir/slides.txt`` as such a list).
    out_dir : path
        The output folder.
    config : RunConfig or path, optional
        A `wsi-pipeline run` config.
    client : distributed.Client, optional
        An existing Dask client: the run submits to its scheduler and leaves it open. The
        workers that may run the network must offer the config's ``cluster.infer_resource``
        ("GPU" by default, one unit per network at a time, GPU or not), e.g.
        ``LocalCluster(resources={"GPU": 1})``. None: the config's cluster (the embedded one
        by default; a single slide runs in this process).

    Returns
    -------
    wsi_pipeline.cohort.runner.RunReport
        The manifest rows, failures and timings.

    Raises
    ------
    ProcessingError
        A slide failed (after every other slide ran); the message lists each failure.
    """
    from wsi_pipeline.atomic import write_text_atomic
    from wsi_pipeline.cohort.runner import CohortRunner

    cfg = _config(config)
    if client is not None:
        cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
            update={"scheduler": client.scheduler.address})})
    out = Path(out_dir)
    if isinstance(slides, str | os.PathLike):
        source = Path(slides)
    else:
        out.mkdir(parents=True, exist_ok=True)
        source = out / "slides.txt"
        write_text_atomic(source, "".join(f"{Path(p).resolve()}\n" for p in slides))
    report = CohortRunner(source, out, cfg).run()
    if not report.ok:
        lines = [*report.failure_lines(), *report.disk_full]
        raise ProcessingError(f"{len(lines)} problem(s) in {out} (tracebacks in {out / 'logs'}): "
                              + "; ".join(lines))
    return report
