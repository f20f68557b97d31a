"""Service plumbing: systemd notification, stage health, the local control socket, logging."""
