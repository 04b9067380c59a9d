"""Cohort runs: discover slides, run their stages on Dask with resume and fault isolation,
record a manifest, summarise the cohort.

Entry points: `CohortRunner` (runner.py), `load_run_config` (config.py), `summarize_cohort`
(summarize.py). Nothing here is imported by the per-slide stages.
"""
