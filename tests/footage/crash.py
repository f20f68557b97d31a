"""Run a step in a forked child with DOORBELL_EDGE_CRASH_AT set, so edge.crashpoints SIGKILLs it at that boundary
(no cleanup, no flush, as a power cut or the OOM killer would), and check that it died there."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable

from edge.crashpoints import ENV


def killed_at(point: str, step: Callable[[], object]) -> None:
    """Run step() in a child that must be SIGKILLed at `point`; AssertionError if it finished or failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.environ[ENV] = point
            step()
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the child was not killed at {point!r} (exit status {os.waitstatus_to_exitcode(status)}): the crash point "
        "is not on this path"
    )
