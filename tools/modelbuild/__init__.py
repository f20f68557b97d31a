"""Build-time helpers for tools/build_models.py (never imported at run time)."""
