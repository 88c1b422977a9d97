"""A deadline for blocking ADIOS opens, kept by a watchdog process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Waits on its stdin, which reaches EOF when the block finished or the guarded process is gone.
_WATCHDOG = (
    "import os,select,signal,sys\n"
    "pid,secs,msg=int(sys.argv[1]),float(sys.argv[2]),sys.argv[3]\n"
    "if not select.select([sys.stdin],[],[],secs)[0]:\n"
    "    sys.stderr.write('error: '+msg+'\\n'); sys.stderr.flush()\n"
    "    os.kill(pid,signal.SIGTERM)\n"
    "    if not select.select([sys.stdin],[],[],3)[0]:\n"
    "        os.kill(pid,signal.SIGKILL)\n"
)


@contextmanager
def open_deadline(seconds: float, message: str) -> Iterator[None]:
    """End this process with `message` if the block does not finish within `seconds`.

    Blocking ADIOS opens hold the GIL and ignore signals, so the guard is a tiny watchdog
    process that waits on a pipe; closing the pipe (block finished) releases it.
    """
    guard = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), message],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        guard.stdin.close()
        guard.wait()
