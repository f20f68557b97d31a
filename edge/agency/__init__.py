"""The agency's side of footage requests (`doorbell-edge-agency`): keys, request checking and signing.

Its import graph is small on purpose (PyYAML, pydantic, cryptography, rfc8785, py-minisign, pyrage, bech32): an
agency installs and runs it without the daemon's OpenCV, LiteRT, numpy or matplotlib. It checks requests with the
device's own schema and rule checks (edge.footage.request, edge.footage.policy), never a copy of them."""
