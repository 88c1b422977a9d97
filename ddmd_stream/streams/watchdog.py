"""A deadline for blocking ADIOS opens, kept by a watchdog process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Waits on its stdin, which reaches EOF when the block finished or the guarded process is gone;
# ends the guarded process at the deadline, or as soon as the stop file (if any) appears.
_WATCHDOG = (
    "import os,select,signal,sys,time\n"
    "pid,secs,msg,stop=int(sys.argv[1]),float(sys.argv[2]),sys.argv[3],sys.argv[4]\n"
    "end=time.monotonic()+secs\n"
    "while True:\n"
    "    left=end-time.monotonic()\n"
    "    if left<=0:\n"
    "        why='error: '+msg; break\n"
    "    if select.select([sys.stdin],[],[],min(left,0.5))[0]:\n"
    "        sys.exit(0)\n"
    "    if stop and os.path.exists(stop):\n"
    "        why='stopping: '+stop+' appeared while blocked ('+msg+')'; break\n"
    "sys.stderr.write(why+'\\n'); sys.stderr.flush()\n"
    "os.kill(pid,signal.SIGTERM)\n"
    "if not select.select([sys.stdin],[],[],3)[0]:\n"
    "    os.kill(pid,signal.SIGKILL)\n"
)


@contextmanager
def open_deadline(seconds: float, message: str, stop_file: Path | None = None) -> Iterator[None]:
    """End this process with `message` if the block does not finish within `seconds`, or
    as soon as `stop_file` appears (a run's STOP: a task blocked in an open still stops).

    Blocking ADIOS opens hold the GIL and ignore signals, so the guard is a tiny watchdog
    process that waits on a pipe; closing the pipe (block finished) releases it.
    """
    guard = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), message,
         str(stop_file or "")],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        guard.stdin.close()
        guard.wait()
