"""HoVer-Net's `.mat` (tile mode): inst_map, type_map, inst_type, inst_centroid (x, y),
inst_type_prob, inst_uid, and provenance, as HoVer-Net's `run_infer.py tile` writes it, so
its evaluation scripts and `wsi-pipeline evaluate` read it.

It holds the label map, so it is written for images only (a slide's map would be the
slide's size); the layout itself is written by `evaluation.matio`, beside its reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.export.formats.base import Nuclei, OutputFormat


class HoVerNetMatFormat(OutputFormat):
    """Per-instance arrays in nucleus_id order (ids 1..N of the label map)."""

    name = "mat"
    suffix = ".mat"
    needs_labels = True

    def write(self, nuclei: Nuclei, path: Path) -> int:
        from wsi_pipeline.evaluation.matio import write_instance_mat

        self.check(nuclei)
        assert nuclei.labels is not None  # check() raised otherwise
        types = np.concatenate([b.column("type_id").to_numpy(False) for b in nuclei.read(["type_id"])]
                               or [np.empty(0, np.int16)])
        extra = {**nuclei.provenance, "class_names": np.array(nuclei.class_names, dtype=object)}
        write_instance_mat(path, nuclei.labels, types, inst_type_prob=nuclei.type_probs,
                           inst_uid=np.arange(1, types.size + 1), extra=extra)
        return int(types.size)
