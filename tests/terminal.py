"""Run a command with its stderr on a pseudo-terminal, to see what a person at a terminal would."""

from __future__ import annotations

import os
import subprocess
import threading


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, bytes]:
    """(exit code, what the terminal showed, stdout bytes) of `args` run with stderr on a pty."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=timeout)
    reader.join(10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace"), stdout
