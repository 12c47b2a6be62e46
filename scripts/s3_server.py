#!/usr/bin/env python3
"""Run an S3-compatible server (moto) on a loopback port, in the foreground.

No MinIO binary can be installed on these machines, so tests and local stacks talk
to moto's S3 through the same ``minio`` client code that talks to MinIO in
production. The server keeps everything in memory: it is for tests and demos.

    python scripts/s3_server.py                 # free port, prints host:port
    python scripts/s3_server.py --port 9000 --endpoint-file var/s3.endpoint

Once the server answers HTTP, the endpoint (``host:port``) is printed as the first
line of stdout (and written to --endpoint-file if given). It then serves until
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def wait_until_answering(endpoint: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{endpoint}/", timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer (even 4xx) means the server is up
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"S3 server at {endpoint} did not answer within {timeout}s")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--endpoint-file", type=Path, help="also write host:port to this file")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    # Requests are signed for us-east-1 by default; moto's defaults are fine otherwise.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    wait_until_answering(endpoint)

    if args.endpoint_file:
        args.endpoint_file.parent.mkdir(parents=True, exist_ok=True)
        args.endpoint_file.write_text(endpoint + "\n")
    print(endpoint, flush=True)

    stop.wait()
    server.stop()
    if args.endpoint_file:
        args.endpoint_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
