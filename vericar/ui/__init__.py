"""Presentation for the app and its API, and the public Space's per-visitor stores."""
