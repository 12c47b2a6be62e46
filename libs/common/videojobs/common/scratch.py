"""Per-process scratch folders: downloaded inputs and results live there while a job runs.

A process killed with SIGKILL cannot clean up after itself, so each process
empties its own folder at start and removes the folders of dead processes of the
same host (a restarted container reuses its pod's folder, often with the same pid).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def prepare_scratch(root: Path) -> Path:
    """This process's empty scratch folder under `root`; leftovers of dead processes of this host removed."""
    host = socket.gethostname()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    for entry in root.iterdir():
        owner, _, pid = entry.name.rpartition("-")
        if owner == host and pid.isdigit() and (int(pid) == me or not _alive(int(pid))):
            shutil.rmtree(entry, ignore_errors=True)
    mine = root / f"{host}-{me}"
    mine.mkdir(exist_ok=True)
    return mine
