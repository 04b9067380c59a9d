"""Export, the stage after post-processing: nuclei.parquet in, the user's outputs out.

summary.json and the stage (`stage`), QC flags (`qc`), the QC sheet (`qc_regions`, `qc_sheet`),
overlay.png (`overlay`), QuPath GeoJSON (`geojson`); everything export reads comes from the
table's metadata (`table_meta`), so it runs without maps.zarr. Settings in `config`.
"""
