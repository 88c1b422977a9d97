"""Distinct EVPath seeds for processes that share a stream folder.

EVPath, under ADIOS2's SST, names each process's connection manager with
srand48(time(NULL) + getpid()); lrand48(). Two processes whose start second plus pid coincide
get the same name, and a reader connected to both mixes their connections up: one writer gets
the other's messages and dies of SIGSEGV. Processes that share a stream folder therefore make
sure their seeds differ before their first SST open.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from ddmd_stream.streams.liveness import pid_alive

logger = logging.getLogger(__name__)

SEED_REGISTRY = ".evpath-seeds"
FOREIGN_SEED_HOLD_S = 86400.0  # a seed taken on another host is avoided for this long
_evpath_seed: int | None = None  # this process's, once reserved


def reserve_evpath_seed(folder: Path) -> int:
    """Make sure this process's EVPath seed (second + pid) is unique among live processes.

    Registers the seed in `folder/.evpath-seeds/` and returns it; waits for the next second
    when the current one's seed is taken (or too little of the second is left to open in it).
    Call right before the first SST open of the process; later calls return at once.
    """
    global _evpath_seed
    if _evpath_seed is not None:
        return _evpath_seed
    from filelock import FileLock

    registry = Path(folder) / SEED_REGISTRY
    registry.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    while True:
        now = time.time()
        if now % 1.0 > 0.5:  # the open must happen within the same second
            time.sleep(1.0 - now % 1.0 + 0.01)
            continue
        seed = int(now) + os.getpid()
        with FileLock(str(registry) + ".lock", timeout=60):
            holder = registry / str(seed)
            if not _seed_held(holder, me):
                _prune_seeds(registry)
                holder.write_text(me)
                _evpath_seed = seed
                return seed
        logger.info("EVPath seed %d is taken; waiting for the next second", seed)
        time.sleep(1.0 - time.time() % 1.0 + 0.01)


def _seed_held(holder: Path, me: str) -> bool:
    """Does a live process other than `me` ("host pid") hold the seed file `holder`?"""
    try:
        host, pid = holder.read_text().split()
        age = time.time() - holder.stat().st_mtime
    except (OSError, ValueError):
        return False
    if f"{host} {pid}" == me:
        return False
    if host != socket.gethostname():
        return age < FOREIGN_SEED_HOLD_S
    return pid_alive(int(pid))


def _prune_seeds(registry: Path) -> None:
    """Remove the seed files of processes that are gone."""
    for holder in registry.iterdir():
        if holder.is_file() and not _seed_held(holder, ""):
            holder.unlink(missing_ok=True)
