"""The stage contract (wsi_pipeline.contract): one set of names the stages hand each other."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from wsi_pipeline import contract
from wsi_pipeline.cohort import stages


def test_stage_outputs_and_reads_are_contract_names():
    named = {contract.MAPS, contract.MAPS_PARTIAL, contract.TISSUE_PNG, contract.TISSUE_JSON,
             contract.NUCLEI, contract.SUMMARY, contract.OVERLAY, contract.GEOJSON, contract.CSV,
             contract.QC_DIR}
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
        "export": ("nuclei.geojson.gz", "nuclei.csv", "summary.json", "overlay.png", "qc"),
    }


def test_nuclei_schema_and_prob_column_rule():
    schema = contract.nuclei_schema(("Inflammatory", "Epithelial/Malignant"))
    assert contract.prob_column("Epithelial/Malignant") == "prob_epithelial_malignant"
    assert schema.names[:12] == ["nucleus_id", "x", "y", "x_um", "y_um", "area_um2", "perimeter_um",
                                 "eccentricity", "solidity", "type_id", "type_name", "type_prob"]
    assert schema.names[12:] == ["prob_inflammatory", "prob_epithelial_malignant", "geometry", "bbox"]
    assert schema.field("bbox").type == contract.BBOX_TYPE
    assert schema.field("nucleus_id").type == pa.int64()


def _maps_attrs(**changes) -> contract.MapsAttrs:
    values = dict(mpp=0.5, slide_mpp=0.25, slide_mpp_source="metadata", scale=2.0, origin=(0.5, 0.5),
                  level0_size=(1000, 800), map_size=(500, 400), class_names=("background", "a"),
                  class_colors=("#000000", "#ff0000"), model_sha256="0" * 64, backend={"backend": "torch"},
                  model_config={"n_types": 2}, config={"tile_size": 256}, wsi_pipeline_version="1.0",
                  slide={"path": "/s.svs", "size": 1, "mtime": 0.0}, tissue_mm2=1.5,
                  tile_grid={"tile": 256, "stride": 164, "margin": 46}, stain=None)
    return contract.MapsAttrs(**{**values, **changes})


def test_maps_attrs_round_trip_as_stored():
    attrs = _maps_attrs()
    stored = attrs.to_attrs()
    assert tuple(stored) == contract.MAPS_ATTRIBUTES  # every key, in the order written
    assert stored["origin"] == [0.5, 0.5] and stored["class_names"] == ["background", "a"]
    assert contract.MapsAttrs.from_attrs(json.loads(json.dumps(stored)), "maps.zarr") == attrs
    table = attrs.table_metadata()
    assert list(table) == list(contract.TABLE_KEYS.values()) and table["infer_config"] == {"tile_size": 256}


def test_maps_attrs_of_older_maps_take_the_readers_defaults():
    stored = {k: v for k, v in _maps_attrs().to_attrs().items() if k in contract.MAPS_REQUIRED}
    attrs = contract.MapsAttrs.from_attrs(stored, "old/maps.zarr")
    assert attrs.origin == (0.0, 0.0) and attrs.stain is None and attrs.tissue_mm2 is None
    assert attrs.mpp == 0.5 and attrs.class_colors == ("#000000", "#ff0000")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("scale", None, "'scale' is missing"),
    ("class_names", "background", "'class_names' is 'background', not a list of strings"),
    ("mpp", True, "'mpp' is True, not a number"),
    ("slide", [1], "'slide' is [1], not a mapping"),
])
def test_maps_attrs_name_the_file_and_the_key(key, value, message):
    stored = _maps_attrs().to_attrs()
    if value is None:
        del stored[key]
    else:
        stored[key] = value
    expected = re.escape(f"out/s1/maps.zarr: maps attribute {message}")
    with pytest.raises(contract.MapsAttrsError, match=expected):
        contract.MapsAttrs.from_attrs(stored, "out/s1/maps.zarr")
