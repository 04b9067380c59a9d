"""The stage contract (wsi_pipeline.contract): one set of names the stages hand each other."""

from __future__ import annotations

import pyarrow as pa

from wsi_pipeline import contract
from wsi_pipeline.cohort import stages


def test_stage_outputs_and_reads_are_contract_names():
    named = {contract.MAPS, contract.MAPS_PARTIAL, contract.TISSUE_PNG, contract.TISSUE_JSON,
             contract.NUCLEI, contract.SUMMARY, contract.OVERLAY, contract.GEOJSON, contract.QC_DIR}
    for table in (stages.STAGE_OUTPUTS, stages.STAGE_READS, stages.DEFAULT_PROMISES):
        for names in table.values():
            assert set(names) <= named
    # what a stage reads was written by the stage before it, and deleted before that one's redo
    for i, stage in enumerate(stages.STAGES):
        earlier = {n for s in stages.STAGES[:i] for n in stages.STAGE_OUTPUTS[s]}
        assert set(stages.STAGE_READS[stage]) <= earlier
    # the file names users and other tools rely on
    assert stages.STAGE_OUTPUTS == {
        "infer": ("maps.zarr", "maps.zarr.partial", "tissue.png", "tissue.json"),
        "postproc": ("nuclei.parquet",),
        "export": ("nuclei.geojson.gz", "summary.json", "overlay.png", "qc"),
    }


def test_nuclei_schema_and_prob_column_rule():
    schema = contract.nuclei_schema(("Inflammatory", "Epithelial/Malignant"))
    assert contract.prob_column("Epithelial/Malignant") == "prob_epithelial_malignant"
    assert schema.names[:12] == ["nucleus_id", "x", "y", "x_um", "y_um", "area_um2", "perimeter_um",
                                 "eccentricity", "solidity", "type_id", "type_name", "type_prob"]
    assert schema.names[12:] == ["prob_inflammatory", "prob_epithelial_malignant", "geometry", "bbox"]
    assert schema.field("bbox").type == contract.BBOX_TYPE
    assert schema.field("nucleus_id").type == pa.int64()
