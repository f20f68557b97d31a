"""Evaluations that cross the stages (a real export judged by a reference detector); never imported by the daemon."""
