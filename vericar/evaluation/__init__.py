"""Data sources (local CSV, Hub dataset, open-world holdout) and metrics."""
