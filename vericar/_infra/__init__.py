"""Private infrastructure: atomic writes, runtime tuning."""
