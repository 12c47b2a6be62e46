"""A job's progress for people: a live bar on a terminal, plain single lines anywhere else.

On a terminal (rich): stage, bar, frames done / total, rate and time left, redrawn
in place. Elsewhere (a pipe, a log file, CI) no control characters at all: one
clean line when the stage changes, when another tenth of the frames is done, and
at least every `heartbeat` seconds, so logs show progress without flooding.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from videojobs.common.job import JobStatus
from videojobs.common.resources import JobResource

STAGES = {
    JobStatus.PENDING: "queued",
    JobStatus.RUNNING: "analysing",
    JobStatus.COMPLETED: "done",
    JobStatus.FAILED: "failed",
}


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RateMeter:
    """Frames per second and time left, from successive readings of one job."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start: Optional[tuple[float, int]] = None
        self._last_done = 0

    def update(self, done: int, total: int) -> tuple[Optional[float], Optional[float]]:
        """(frames per second, seconds left); None until two readings show frames being done."""
        now = self._clock()
        if self._start is None or done < self._last_done:  # first reading, or a new attempt started over
            self._start = (now, done)
        self._last_done = done
        started_at, done_at_start = self._start
        if now <= started_at or done <= done_at_start:
            return None, None
        rate = (done - done_at_start) / (now - started_at)
        left = (total - done) / rate if total >= done else None
        return rate, left


def describe(job: JobResource, rate: Optional[float], left: Optional[float]) -> str:
    """One plain line: id, stage, frames done / total (percent), rate, time left or the failure."""
    parts = [f"job {job.job_id}", STAGES[job.status]]
    if job.frames_total:
        parts.append(f"{job.frames_done}/{job.frames_total} frames ({job.progress:.0%})")
    if job.status is JobStatus.RUNNING and rate is not None:
        parts.append(f"{rate:.1f} frames/s")
        if left is not None:
            parts.append(f"ETA {format_duration(left)}")
    if job.status is JobStatus.FAILED and job.error_message:
        parts.append(job.error_message)
    return ": ".join(parts[:2]) + (", " + ", ".join(parts[2:]) if len(parts) > 2 else "")


class ProgressView:
    """Shows successive JobResource readings of one job; `live` defaults to "the stream is a terminal"."""

    def __init__(self, stream: Optional[TextIO] = None, live: Optional[bool] = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat: float = 30.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.live = self._stream.isatty() if live is None else live
        self._clock = clock
        self._meter = RateMeter(clock)
        self._heartbeat = heartbeat
        self._last: Optional[tuple[JobStatus, int, float]] = None  # stage, tenth, time of the last plain line
        self._progress = None
        self._task = None

    def __enter__(self) -> "ProgressView":
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.fields[stage]:<9}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[eta]}"),
                console=Console(file=self._stream), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("job", total=None, stage="", rate="", eta="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self, job: JobResource) -> None:
        rate, left = self._meter.update(job.frames_done, job.frames_total)
        if self._progress is not None:
            running = job.status is JobStatus.RUNNING
            self._progress.update(
                self._task, completed=job.frames_done, total=job.frames_total or None, stage=STAGES[job.status],
                rate=f"{rate:.1f} frames/s" if running and rate is not None else "",
                eta=f"ETA {format_duration(left)}" if running and left is not None else "",
            )
            return
        now = self._clock()
        tenth = int(job.progress * 10)
        if self._last is not None:
            stage, last_tenth, at = self._last
            if stage is job.status and tenth == last_tenth and now - at < self._heartbeat:
                return
        self._last = (job.status, tenth, now)
        print(describe(job, rate, left), file=self._stream, flush=True)
