"""The owner's page: a small HTTPS site served by the daemon (setup, login, events, requests, faces, audit)."""
