"""Container health check for the videojobs images (Docker HEALTHCHECK).

    videojobs-healthcheck grpc HOST:PORT [SERVICE]   # grpc.health.v1 Check, SERVING -> 0
    videojobs-healthcheck http URL                   # any 2xx -> 0

Kubernetes does not use this (it has native gRPC and HTTP probes); it is for
`docker run` and compose-style hosts. Exit status 0 is healthy, 1 is not.
"""

from __future__ import annotations

import sys
import urllib.request


def check_grpc(target: str, service: str = "", timeout: float = 3.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {target} {exc.code().name}", file=sys.stderr)
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def check_http(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (loopback only)
            return 200 <= reply.status < 300
    except OSError as exc:
        print(f"unhealthy: {url} {exc}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "grpc":
        return 0 if check_grpc(argv[1], argv[2] if len(argv) > 2 else "") else 1
    if len(argv) == 2 and argv[0] == "http":
        return 0 if check_http(argv[1]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
