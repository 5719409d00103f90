"""Pipelines on a schedule: the training and monitoring loops as Prefect flows over the stages."""
