"""How scripts/bench_pipeline.py measures a pipeline's peak memory (issue 11's "memory flat"):
in a child process of its own, which must report its own peak and not the benchmark's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import load_script

bench = load_script("bench_pipeline")
REPO = Path(__file__).resolve().parents[2]
BALLAST_MIB = 600


def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    # getrusage's ru_maxrss survives exec: a child started by subprocess reported the parent's peak
    # (the benchmark's 2.2 GiB) as its own.
    ballast = bytearray(BALLAST_MIB * 2**20)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))  # every page resident
    code = "from tests.conftest import load_script; print(load_script('bench_pipeline').peak_rss_mib())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    child = float(out.stdout.split()[-1])
    assert bench.peak_rss_mib() >= BALLAST_MIB
    assert 0 < child < BALLAST_MIB / 2, child
