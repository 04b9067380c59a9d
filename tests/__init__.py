"""The test suite, a package mirroring wsi_pipeline/: tests/<package>/test_<module>.py."""
