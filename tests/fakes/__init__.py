"""Fakes for hardware that cannot exist on a CI machine, shaped like the real libraries' APIs."""
