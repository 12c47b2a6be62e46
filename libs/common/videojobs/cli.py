"""The `videojobs` command: a thin dispatcher to each service's composition root."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# gRPC's fork handlers warn on every subprocess a library starts while RPCs run;
# no videojobs process forks into gRPC, so they are off (read when grpc is imported).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from videojobs.common.serving import PortInUse  # noqa: E402

# sub-command -> (module with `main(argv)`, or "module:function", help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("videojobs.api.embedded", "everything in one process on embedded defaults"),
    "api": ("videojobs.api.bootstrap", "the gRPC JobService"),
    "gateway": ("videojobs.gateway.bootstrap", "the REST gateway (/video/*)"),
    "worker": ("videojobs.worker.bootstrap", "a worker pulling jobs from the queue"),
    "keys": ("videojobs.api.keys", "create, list and revoke tenants' API keys"),
    "tenants": ("videojobs.api.tenants", "list tenants; set a tenant's own limits (active jobs, request rate)"),
    "migrate": ("videojobs.common.adapters.sql.migrate", "apply (or roll back) database migrations"),
    "analyze": ("videojobs.worker.pipeline.cli", "analyse one local video file and print results JSON"),
    "submit": ("videojobs.client.cli:submit", "submit a video to a running service (--wait follows it)"),
    "status": ("videojobs.client.cli:status", "where a job stands"),
    "watch": ("videojobs.client.cli:watch", "follow a job with a live progress bar until it ends"),
    "results": ("videojobs.client.cli:results", "write a finished job's results (JSON or CSV)"),
    "render": ("videojobs.client.cli:render", "render a finished job's annotated frames as a contact sheet"),
    "list": ("videojobs.client.cli:list_jobs", "your jobs, newest first (--status to filter)"),
    "cancel": ("videojobs.client.cli:cancel", "cancel a pending or running job"),
    "delete": ("videojobs.client.cli:delete", "delete a job with its input, results and frame images"),
}


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("videojobs")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="videojobs", description="Asynchronous video analysis jobs.")
    parser.add_argument("--version", action="version", version=f"videojobs {version()}")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args, rest = parser.parse_known_args(argv[:1])
    module_name, _, function = COMMANDS[args.command][0].partition(":")
    command = getattr(importlib.import_module(module_name), function or "main")
    try:
        return int(command(argv[1:]) or 0)
    except PortInUse as exc:
        print(f"videojobs {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
