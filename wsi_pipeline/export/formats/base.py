"""The interface every output format implements, and the nuclei it writes from.

`Nuclei` is one slide's or one image's nucleus table (nuclei.parquet's rows, read in
batches so a slide's millions of nuclei never sit in memory at once) with what a format may
need besides: class names and colours, an id for stable object UUIDs, and in tile mode the
instance map and the per-nucleus mean type probabilities. An `OutputFormat` turns it into
one file; its settings come from the run config's `export` section.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.export.formats import FormatError, format_class

#: reads the table in batches: (columns to read, None for all) -> record batches
BatchReader = Callable[[Sequence[str] | None], Iterator[pa.RecordBatch]]


@dataclass(frozen=True)
class Nuclei:
    """The nuclei of one slide or image, as every output format reads them.

    Attributes
    ----------
    source_id : str
        The slide id or image name (GeoJSON object UUIDs are made from it).
    schema : pyarrow.Schema
        The table's columns (`contract.nuclei_schema`) and metadata.
    read : callable
        ``read(columns)`` yields the rows as record batches, ``columns=None`` for all.
    class_names, class_colors : tuple of str
        The model's types, background first, and their ``#rrggbb`` colours.
    level0_mpp : float
        µm per pixel of the table's x, y and outlines.
    labels : numpy.ndarray, optional
        The (H, W) instance map, ids = nucleus_id (tile mode; a slide has none in memory).
    type_probs : numpy.ndarray, optional
        (N, C) per-nucleus mean softmax of the type branch, before the table's renormalisation.
    provenance : dict
        Model sha256, version and pixel size, stored where a format has room for it.
    """

    source_id: str
    schema: pa.Schema
    read: BatchReader
    class_names: tuple[str, ...]
    class_colors: tuple[str, ...]
    level0_mpp: float
    labels: np.ndarray | None = None
    type_probs: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_parquet(cls, path: Path, *, source_id: str, class_names: Sequence[str],
                     class_colors: Sequence[str], level0_mpp: float, batch_rows: int = 65536,
                     provenance: dict[str, Any] | None = None) -> Nuclei:
        """A slide's nuclei.parquet, read `batch_rows` rows at a time."""
        schema = pq.read_schema(path)

        def read(columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
            yield from pq.ParquetFile(path).iter_batches(
                batch_size=batch_rows, columns=None if columns is None else list(columns))

        return cls(source_id, schema, read, tuple(class_names), tuple(class_colors), level0_mpp,
                   provenance=dict(provenance or {}))

    @classmethod
    def from_table(cls, table: pa.Table, *, source_id: str, class_names: Sequence[str],
                   class_colors: Sequence[str], level0_mpp: float, labels: np.ndarray | None = None,
                   type_probs: np.ndarray | None = None,
                   provenance: dict[str, Any] | None = None) -> Nuclei:
        """An image's table, in memory (tile mode)."""

        def read(columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
            yield from (table if columns is None else table.select(list(columns))).to_batches()

        return cls(source_id, table.schema, read, tuple(class_names), tuple(class_colors),
                   level0_mpp, labels, type_probs, dict(provenance or {}))


class OutputFormat(ABC):
    """One file format of the nuclei.

    Parameters
    ----------
    settings : ExportConfig
        The run config's `export` section (GeoJSON decimals, cell objects, batch size ...).
    """

    #: registry name (`export.formats.FORMATS`), as `run --formats` takes it
    name: ClassVar[str]
    #: file name ending: a slide's file is ``nuclei<suffix>``, an image's ``<stem><suffix>``
    suffix: ClassVar[str]
    #: whether it needs the instance map (then it writes images only, not slides)
    needs_labels: ClassVar[bool] = False

    def __init__(self, settings: ExportConfig | None = None) -> None:
        self.settings = settings or ExportConfig()

    @abstractmethod
    def write(self, nuclei: Nuclei, path: Path) -> int:
        """Write `nuclei` to `path` atomically (never a half-written file); return the
        number of nuclei written."""

    def check(self, nuclei: Nuclei) -> None:
        """Raise `FormatError` naming the format if it cannot write `nuclei`."""
        if self.needs_labels and nuclei.labels is None:
            raise FormatError(f"the {self.name} format ({self.suffix}) needs the label map, which "
                              f"only tile mode has: not written for {nuclei.source_id}")


def output_format(name: str, settings: ExportConfig | None = None) -> OutputFormat:
    """The writer registered as `name` (`export.formats.FORMATS`), with the run config's
    export `settings`.

    Examples
    --------
    >>> output_format("csv").suffix
    '.csv'
    """
    writer: OutputFormat = format_class(name)(settings)
    return writer
