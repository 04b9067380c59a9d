"""Training, beside the pipeline: annotated datasets in, a checkpoint the pipeline loads out.

The loop with validation and resume (`loop`) and its settings (`config`); the readers and the
targets they feed come from `wsi_pipeline.datasets`, the scores from `wsi_pipeline.evaluation`.
"""
