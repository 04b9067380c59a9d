"""One Parquet dataset over the nucleus tables of every finished slide of a run.

Each slide keeps its own OUT/<slide_id>/nuclei.parquet; this is a view over them, nothing is
copied. The `slide_id` column comes from the folder name (the slide id, see layout.py). Only
slides the manifest calls finished are included: a slide that failed after post-processing
may still have a table that its rerun will replace. Tables of slides run with models that
have other classes differ in their prob_* columns: the dataset's schema is their union
(a column a slide lacks reads as null).

    from wsi_pipeline.cohort.dataset import nuclei_dataset
    import pyarrow.dataset as ds
    nuclei = nuclei_dataset("OUT")
    window = ((ds.field("slide_id") == "slide1") & (ds.field("bbox", "xmin") <= 6000)
              & (ds.field("bbox", "xmax") >= 5000) & (ds.field("bbox", "ymin") <= 6000)
              & (ds.field("bbox", "ymax") >= 5000))
    nuclei.to_table(filter=window, columns=["slide_id", "nucleus_id", "type_name"])

The same view in DuckDB: workflows/README.md ("A cohort-wide view").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from wsi_pipeline.cohort.layout import slide_dir
from wsi_pipeline.cohort.manifest import MANIFEST
from wsi_pipeline.contract import NUCLEI


def nuclei_dataset(out_dir: str | Path, statuses: Iterable[str] = ("done",)) -> ds.Dataset:
    """A pyarrow Dataset of every nucleus of the manifest's slides in `statuses`, with `slide_id`.

    Raises FileNotFoundError when OUT has no manifest; slides whose table is missing are left out.
    """
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{out_dir / MANIFEST}: no manifest: is {out_dir} the output of "
                                "`wsi-pipeline run`?")
    manifest = pq.read_table(out_dir / MANIFEST, columns=["slide_id", "status"]).to_pylist()
    wanted = set(statuses)
    files = [str(slide_dir(out_dir, r["slide_id"]) / NUCLEI) for r in manifest
             if r["status"] in wanted and (slide_dir(out_dir, r["slide_id"]) / NUCLEI).is_file()]
    partitioning = ds.DirectoryPartitioning(pa.schema([("slide_id", pa.string())]),
                                            segment_encoding="none")
    if not files:
        return ds.dataset(pa.table({"slide_id": pa.array([], pa.string())}))
    schemas = [pq.read_schema(f) for f in files]
    schema = pa.unify_schemas([pa.schema([("slide_id", pa.string())]),
                               *[s.remove_metadata() for s in schemas]])
    # The GeoParquet metadata (geometry column, bbox covering) is the same in every table;
    # the per-slide provenance is not, and stays in each file.
    geo = (schemas[0].metadata or {}).get(b"geo")
    if geo is not None:
        schema = schema.with_metadata({b"geo": geo})
    return ds.dataset(files, schema=schema, format="parquet", partitioning=partitioning,
                      partition_base_dir=str(out_dir))
