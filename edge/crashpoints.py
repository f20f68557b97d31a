"""Named crash points for the kill tests: `DOORBELL_EDGE_CRASH_AT=<point>` SIGKILLs the process right there.

A multi-step change (submit, export, enrol, forget, audit repair) calls crash_point() between its durable steps so
a test can run it in a child process and kill it at each boundary, the way a power cut or the OOM killer would.
Unset (always, outside tests), it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DOORBELL_EDGE_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when the environment names this point (no cleanup, no flush: a real crash)."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
