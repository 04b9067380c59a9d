"""Helpers shared by test modules (synthetic maps, cohorts, datasets, QC slides), imported as
`from tests.helpers.<module> import ...`."""
