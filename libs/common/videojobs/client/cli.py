"""The client commands of ``videojobs``: submit, status, watch, results, render, list, cancel, delete (gRPC).

Exit codes scripts can rely on: 0 done, 1 the job failed, 2 usage (bad arguments,
unknown job, invalid options, results not ready yet), 3 the service is unreachable
or failing, 4 a wait ran out (the job goes on). The job id goes to stdout,
progress and messages to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator, TextIO

from videojobs.client.client import VideoJobsClient
from videojobs.client.errors import ServiceError, ServiceUnreachable, WaitTimeout
from videojobs.client.export import write_detections_csv, write_results_json
from videojobs.client.progress import ProgressView, describe
from videojobs.common.errors import RESULTS_NOT_READY, VideoJobsError
from videojobs.common.frames import SHEET_COLUMNS, SHEET_MAX_FRAMES, SHEET_TILE_WIDTH
from videojobs.common.job import JobStatus
from videojobs.common.options import add_option_arguments, options_from_arguments
from videojobs.common.pipelines import DEFAULT_PIPELINE, PIPELINES
from videojobs.common.resources import JobResource
from videojobs.common.results import FrameResult

EXIT_DONE = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4

EXIT_CODES = ("exit codes: 0 done, 1 the job failed, 2 usage (bad arguments, unknown job, invalid options, results "
              "not ready), 3 service unreachable or failing, 4 the wait ran out (the job goes on)")


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"videojobs {command}", description=description, epilog=EXIT_CODES)
    parser.add_argument("--server", default=None, metavar="HOST:PORT",
                        help="the gRPC JobService (default: VIDEOJOBS_SERVER, else localhost:50051); "
                             "the API key is read from VIDEOJOBS_API_KEY")
    return parser


def _add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop waiting after this long (exit 4; the job goes on)")
    parser.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="seconds between polls")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the outcome")


def _error(command: str, message: str) -> None:
    print(f"videojobs {command}: {message}", file=sys.stderr)


def _run(command: str, body: Callable[[], int]) -> int:
    """Run a command body, turning errors into a message on stderr and the exit code scripts expect."""
    try:
        return body()
    except ServiceUnreachable as exc:
        _error(command, str(exc))
        return EXIT_UNREACHABLE
    except ServiceError as exc:
        lines = [f"{exc.detail} ({exc.slug})"]
        lines += [f"  {p['name']}: {p['reason']}" for p in exc.extensions.get("invalid_params", [])]
        _error(command, "\n".join(lines))
        if exc.problem is RESULTS_NOT_READY and exc.job_status == JobStatus.FAILED.value:
            return EXIT_JOB_FAILED
        return EXIT_UNREACHABLE if exc.problem.http_status >= 500 else EXIT_USAGE
    except WaitTimeout as exc:
        _error(command, f"{exc}; `videojobs watch {exc.job.job_id}` follows it again")
        return EXIT_TIMEOUT
    except VideoJobsError as exc:  # e.g. options that do not parse, checked before anything is sent
        _error(command, exc.public_detail)
        return EXIT_USAGE
    except BrokenPipeError:  # `videojobs results ID --format csv | head`: the reader has seen enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush into the closed pipe at exit
        return EXIT_DONE
    except OSError as exc:  # the local file to send or write
        _error(command, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _follow(client: VideoJobsClient, job_id: str, args: argparse.Namespace) -> int:
    """Wait for the job with a progress view; 0 if it completed, 1 if it failed."""
    view = nullcontext() if args.quiet else ProgressView()
    with view as progress:
        job = client.wait(job_id, timeout=args.timeout, poll_interval=args.interval,
                          on_progress=progress.update if progress is not None else None)
    if args.quiet or (progress is not None and progress.live):
        print(describe(job, None, None), file=sys.stderr)
    return EXIT_DONE if job.status is JobStatus.COMPLETED else EXIT_JOB_FAILED


# -- submit ------------------------------------------------------------------------------------------
def submit(argv: list[str]) -> int:
    parser = _parser("submit", "Submit a video for analysis; prints the job id.")
    parser.add_argument("file", nargs="?", type=Path, help="video file (MP4/MOV/M4V, MKV, WebM, AVI)")
    parser.add_argument("--from-storage", metavar="KEY", default=None,
                        help="analyse a video already in the service's object storage instead of uploading FILE")
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=list(PIPELINES),
                        help=f"default {DEFAULT_PIPELINE}")
    parser.add_argument("--wait", action="store_true", help="wait for the job with a progress bar; exit 0 or 1")
    parser.add_argument("--request-id", default=None, metavar="KEY",
                        help="idempotency key: submitting again with the same key returns the first job "
                             "(default: a fresh one per command, reused by its own retries)")
    parser.add_argument("--callback-url", default="", metavar="URL",
                        help="receives one signed POST (Standard Webhooks) when the job ends")
    _add_wait_arguments(parser)
    add_option_arguments(parser)
    args = parser.parse_args(argv)
    if (args.file is None) == (args.from_storage is None):
        parser.error("give either FILE or --from-storage KEY")

    def body() -> int:
        options = options_from_arguments(args)
        with VideoJobsClient(args.server) as client:
            extra = {"request_id": args.request_id, "callback_url": args.callback_url}
            if args.file is not None:
                job = client.submit_file(args.file, args.pipeline, options, **extra)
            else:
                job = client.submit_from_storage(args.from_storage, args.pipeline, options, **extra)
            print(job.job_id, flush=True)
            return _follow(client, job.job_id, args) if args.wait else EXIT_DONE

    return _run("submit", body)


# -- status / watch ----------------------------------------------------------------------------------
def _status_text(job: JobResource) -> str:
    rows = [("job", job.job_id), ("status", job.status.value),
            ("progress", f"{job.frames_done}/{job.frames_total} frames ({job.progress:.0%})"),
            ("pipeline", job.pipeline_id), ("attempt", str(job.attempt)),
            ("created", job.created_at.isoformat()), ("updated", job.updated_at.isoformat())]
    if job.error_message:
        rows.append(("error", job.error_message))
    return "\n".join(f"{name:<9}{value}" for name, value in rows)


def status(argv: list[str]) -> int:
    parser = _parser("status", "Print where a job stands; exit 1 if it failed.")
    parser.add_argument("job_id", metavar="ID")
    parser.add_argument("--json", action="store_true", help="the job resource as JSON (as GET /video/status)")
    args = parser.parse_args(argv)

    def body() -> int:
        with VideoJobsClient(args.server) as client:
            job = client.status(args.job_id)
        print(job.model_dump_json() if args.json else _status_text(job))
        return EXIT_JOB_FAILED if job.status is JobStatus.FAILED else EXIT_DONE

    return _run("status", body)


def watch(argv: list[str]) -> int:
    parser = _parser("watch", "Follow a job with a live progress bar (frames, stage, rate, ETA) until it ends.")
    parser.add_argument("job_id", metavar="ID")
    _add_wait_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with VideoJobsClient(args.server) as client:
            return _follow(client, args.job_id, args)

    return _run("watch", body)


# -- results / render --------------------------------------------------------------------------------
def results(argv: list[str]) -> int:
    parser = _parser("results", "Write a finished job's results: the REST results document (JSON) or one CSV row "
                                "per detection.")
    parser.add_argument("job_id", metavar="ID")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="default: stdout")
    parser.add_argument("--format", choices=("json", "csv"), default="json",
                        help="json: the document GET /video/results/{id} answers; csv: frame, time, class, "
                             "confidence, track and box of every detection")
    args = parser.parse_args(argv)

    def body() -> int:
        # Written as the pages come: a long job's document is never held whole.
        with VideoJobsClient(args.server) as client, _text_output(args.output) as out:
            if args.format == "csv":
                frames = 0

                def counted() -> Iterator[FrameResult]:
                    nonlocal frames
                    for frame in client.frames(args.job_id):
                        frames += 1
                        yield frame

                rows = write_detections_csv(counted(), out)
                summary = f"{rows} detections in {frames} frames"
            else:
                summary = f"{write_results_json(args.job_id, client.result_pages(args.job_id), out)} frames"
        if args.output:
            print(f"wrote {args.output} ({summary})", file=sys.stderr)
        return EXIT_DONE

    return _run("results", body)


@contextmanager
def _text_output(path: Path | None) -> Iterator[TextIO]:
    """Standard output, or `path` written in full or not at all (a failure part-way leaves no partial file)."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    part = path.with_name(f".{path.name}.part")
    try:
        with part.open("w", encoding="utf-8", newline="") as out:
            yield out
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)


def _sheet_flag(parser: argparse.ArgumentParser, flag: str, spec: tuple[int, int, int], what: str) -> None:
    default, low, high = spec
    parser.add_argument(flag, type=int, default=0, metavar="N", help=f"{what} ({low}..{high}, default {default})")


def render(argv: list[str]) -> int:
    parser = _parser("render", "Render a finished job's annotated frames: a contact sheet (PNG), or one frame.")
    parser.add_argument("job_id", metavar="ID")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                        help="where to write the PNG (or the JPEG with --frame)")
    _sheet_flag(parser, "--columns", SHEET_COLUMNS, "tiles per row")
    _sheet_flag(parser, "--tile-width", SHEET_TILE_WIDTH, "tile width in pixels")
    _sheet_flag(parser, "--max-frames", SHEET_MAX_FRAMES, "most frames shown, spread over the job")
    parser.add_argument("--frame", type=int, default=None, metavar="INDEX",
                        help="write this analysed frame with its boxes drawn (JPEG) instead of a sheet")
    args = parser.parse_args(argv)

    def body() -> int:
        with VideoJobsClient(args.server) as client:
            if args.frame is not None:
                image = client.frame_image(args.job_id, args.frame, annotated=True)
            else:
                image = client.contact_sheet(args.job_id, args.columns, args.tile_width, args.max_frames)
        args.output.write_bytes(image.data)
        shown = f", {len(image.frame_indices)} frames" if image.frame_indices else ""
        print(f"wrote {args.output} ({image.width}x{image.height} {image.content_type}{shown})", file=sys.stderr)
        return EXIT_DONE

    return _run("render", body)



# -- list / cancel / delete --------------------------------------------------------------------------
def list_jobs(argv: list[str]) -> int:
    parser = _parser("list", "List your jobs, newest first: id, status, progress, pipeline, created.")
    parser.add_argument("--status", choices=[s.value for s in JobStatus], default=None, help="only jobs in this state")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs (default 50, 0: all)")
    parser.add_argument("--json", action="store_true", help="one job resource (as GET /video/status) per line")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error("--limit must be 0 or more")

    def body() -> int:
        with VideoJobsClient(args.server) as client:
            jobs = client.jobs(JobStatus(args.status) if args.status else None,
                               page_size=min(args.limit, 1000) if args.limit else 0)
            for count, job in enumerate(jobs, start=1):
                if args.json:
                    print(job.model_dump_json())
                else:
                    print(f"{job.job_id}  {job.status.value:<9}  {job.frames_done:>6}/{job.frames_total:<6}  "
                          f"{job.pipeline_id:<8}  {job.created_at.isoformat(timespec='seconds')}")
                if count == args.limit:
                    break
        return EXIT_DONE

    return _run("list", body)


def cancel(argv: list[str]) -> int:
    parser = _parser("cancel", "Cancel a PENDING or RUNNING job (exit 2 if it had already ended).")
    parser.add_argument("job_id", metavar="ID")
    args = parser.parse_args(argv)

    def body() -> int:
        with VideoJobsClient(args.server) as client:
            job = client.cancel(args.job_id)
        print(f"{job.job_id} {job.status.value}", file=sys.stderr)
        return EXIT_DONE

    return _run("cancel", body)


def delete(argv: list[str]) -> int:
    parser = _parser("delete", "Delete a job (cancelling it if needed) with its input, results and frame images.")
    parser.add_argument("job_id", metavar="ID")
    args = parser.parse_args(argv)

    def body() -> int:
        with VideoJobsClient(args.server) as client:
            client.delete(args.job_id)
        print(f"{args.job_id} deleted", file=sys.stderr)
        return EXIT_DONE

    return _run("delete", body)
