"""The record in MLflow: what a run logs, its log text, the code version, the run's tracking endpoint, compare."""
