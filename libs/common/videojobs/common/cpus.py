"""How many cores this process may use, and how many threads the detector gets of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def usable_cpus(affinity: Optional[set[int]] = None, cpu_max: Optional[str] = None, cpu_limit: float = 0.0) -> int:
    """Cores this process may use: its CPU affinity, bounded by a cgroup v2 quota and a known limit.

    `affinity` defaults to ``os.sched_getaffinity(0)``, `cpu_max` to the text of
    ``/sys/fs/cgroup/cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``);
    `cpu_limit` is a limit the orchestrator told us (Kubernetes' limits.cpu), 0 if none.
    A fractional quota rounds down (a 1.5-core quota cannot keep two threads busy), never below 1.
    """
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = float(len(affinity) or 1)
    if cpu_max is None:
        try:
            cpu_max = Path("/sys/fs/cgroup/cpu.max").read_text()
        except OSError:
            cpu_max = ""
    parts = cpu_max.split()
    if len(parts) == 2 and parts[0] != "max":
        try:
            cores = min(cores, int(parts[0]) / int(parts[1]))
        except (ValueError, ZeroDivisionError):
            pass
    if cpu_limit > 0:
        cores = min(cores, cpu_limit)
    return max(1, int(cores))


def default_inference_threads(usable: int) -> int:
    """Threads for the detector: every usable core.

    OpenVINO runs them as one-thread streams, each on its own frame, so the decoder and OCR
    threads time-share the cores with frames that do not wait for each other. Measured on a
    2-core AVX2 CPU (AMD EPYC), ms per analysed frame with 1 thread (a core kept for decode
    and OCR) vs 2 streams: sample clip yolo_ocr 91 vs 65, yolo 96 vs 63; 1280x720 clip
    yolo_ocr 103 vs 78, yolo 92 vs 60. On an AMX CPU even a 2-thread latency-mode forward beat
    1 thread in the pipeline (17.4 vs 18.9 ms/frame).
    """
    return max(1, usable)


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` gives it (benchmarks report it beside their numbers)."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                platform.processor())
