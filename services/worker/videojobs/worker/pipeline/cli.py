"""``videojobs analyze FILE``: analyse one local video and print the results document on stdout.

The document is the one ``GET /video/results/{id}`` returns (without ``job_id``,
``status`` and paging). The model is resolved like the service's: ``--model``,
else ``VIDEOJOBS_MODEL`` from the environment or the ``.env`` file in the working
directory (``make install`` writes one naming ``../shared/models``), else the
production default ``yolov8n.pt``. On a terminal a progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from videojobs.common.errors import VideoJobsError
from videojobs.common.options import add_option_arguments, options_from_arguments
from videojobs.common.pipelines import DEFAULT_PIPELINE, PIPELINES
from videojobs.common.ports.analysis import ProgressCallback
from videojobs.worker.pipeline.detector import BACKENDS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="videojobs analyze",
        description="Analyse one local video file and print the results document (JSON) to stdout.",
    )
    p.add_argument("file", type=Path, help="video file (MP4/MOV/M4V, MKV, WebM, AVI)")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=list(PIPELINES),
                   help=f"default {DEFAULT_PIPELINE}")
    p.add_argument("--model", default=None, help="Ultralytics-loadable model (default: VIDEOJOBS_MODEL)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="detector runtime (default: VIDEOJOBS_DETECTOR_BACKEND, else auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    add_option_arguments(p)
    return p


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Optional[ProgressCallback]]:
    """A rich progress bar on stderr (frames done / total, rate, time left), or nothing."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("analysing"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("frames", total=None, rate="")
        started = time.monotonic()

        def update(done: int, total: int) -> None:
            elapsed = time.monotonic() - started
            rate = f"{done / elapsed:.1f} frames/s" if done and elapsed > 0 else ""
            progress.update(task, completed=done, total=total or None, rate=rate)

        yield update


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``videojobs analyze``; exit code 0 on success, 2 on a readable error."""
    args = _parser().parse_args(argv)
    try:
        from videojobs.common.config import load_settings
        from videojobs.worker.bootstrap import build_analyzer

        options = options_from_arguments(args)
        overrides = {k: v for k, v in (("model", args.model), ("detector_backend", args.backend)) if v}
        service = build_analyzer(load_settings(**overrides))
        try:
            with progress_bar(sys.stderr.isatty() and not args.no_progress) as on_progress:
                document = service.run_on_file(args.pipeline, args.file, options, on_progress=on_progress)
        finally:
            service.close()
    except (VideoJobsError, FileNotFoundError) as exc:
        detail = exc.public_detail if isinstance(exc, VideoJobsError) else str(exc)
        print(f"videojobs analyze: {detail}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(document.to_bytes() + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
