"""Starting the dock's worker threads (superqt workers in Qt's global thread pool).

A worker still running while Python tears down its Qt signals raises in Qt's thread,
and PyQt aborts the whole process: a script that clicks, closes the viewer and ends
lost its exit status. The first worker started registers a bounded wait at exit; a
fine-tune's trainer is cancelled first (its checkpoint written), as the thread reading its
output ends only with it.
"""

from __future__ import annotations

import atexit
import sys
from typing import Any

__all__ = ["EXIT_WAIT_SECONDS", "start"]

#: at interpreter exit, how long to wait for worker threads still running
EXIT_WAIT_SECONDS = 30.0
_exit_wait_registered = False


def start(worker: Any) -> None:
    """Start a superqt worker (the first start registers the wait at exit)."""
    global _exit_wait_registered
    if not _exit_wait_registered:
        atexit.register(_await_threads_at_exit)
        _exit_wait_registered = True
    worker.start()


def _await_threads_at_exit() -> None:
    from qtpy.QtCore import QThreadPool

    finetune = sys.modules.get(f"{__package__}.finetune")
    if finetune is not None:  # whichever of the two exit hooks runs first (stop_live is idempotent)
        finetune.stop_live()
    QThreadPool.globalInstance().waitForDone(int(EXIT_WAIT_SECONDS * 1000))
