"""Listening sockets for the composition roots: exclusive ports, clear failures; and their stop signal.

gRPC turns SO_REUSEPORT on by default, so a second server on the same port binds
silently and the two share the traffic. Every server here turns it off and binds
before anything announces itself, so a taken port stops the process at start
with a readable message and a non-zero exit (``videojobs.cli`` prints it).
"""

from __future__ import annotations

import signal
import socket
import threading
from concurrent import futures
from typing import Any, Sequence

import grpc

# Messages are at most one upload chunk plus framing; results pages stay far below.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

# Our clients' channels (the gateway's, the Python client's) ping their server every 10 s, with or without
# calls, and end the connection when a ping is not answered within 5 s: a server that vanished without a word
# (its host died, a partition) is found out in about 15 s and the channel connects afresh, resolving the name
# again, where every call would otherwise meet its deadline for the kernel's ~15 minutes of retransmissions.
KEEPALIVE_CLIENT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
# What our servers accept of those pings. gRPC's default is one per 5 minutes without calls, and a client
# pinging more often is sent away ("too_many_pings").
KEEPALIVE_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
)


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (call from the main thread)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_until_stopped(stop: threading.Event, poll_seconds: float = 0.5) -> None:
    """Block the main thread until `stop` is set, waking every `poll_seconds`. The kernel may deliver
    a signal to any thread (an inference, decoder or gRPC one): CPython then only runs the handler when
    the main thread wakes, and an untimed wait slept through a rolling deploy's SIGTERM."""
    while not stop.wait(poll_seconds):
        pass


class PortInUse(Exception):
    """A port this process must listen on cannot be bound."""

    def __init__(self, what: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen for {what} on {host}:{port}: {reason} "
                         f"(is another videojobs process running? choose another port in the settings)")


def grpc_server(max_workers: int, thread_name_prefix: str = "grpc", interceptors: Sequence[Any] = (),
                options: Sequence[tuple[str, Any]] = ()) -> grpc.Server:
    """A gRPC server that does not share its port with other processes (`options`: more channel arguments)."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix),
        interceptors=list(interceptors),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *KEEPALIVE_SERVER_OPTIONS,
            *options,
        ],
    )


def connection_age_options(max_age_seconds: float, grace_seconds: float) -> list[tuple[str, int]]:
    """Channel arguments that end each client connection `max_age_seconds` after it opened (none for 0), giving the
    RPCs in flight `grace_seconds` to finish, so clients reconnect and spread over the replicas behind a Service."""
    if max_age_seconds <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(max_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(grace_seconds * 1000))]


def bind_grpc(server: grpc.Server, host: str, port: int, what: str = "gRPC") -> int:
    """Bind `server` to host:port (0 = any free port); the bound port, or PortInUse."""
    try:
        bound = server.add_insecure_port(f"{_bracketed(host)}:{port}")
    except RuntimeError as exc:
        bound, reason = 0, str(exc).splitlines()[0]
    else:
        reason = "address already in use"
    if bound == 0:
        try:  # gRPC's own message does not say why; a plain bind does
            bind_http(host, port, what).close()
        except PortInUse as exc:
            raise exc from None
        raise PortInUse(what, host, port, reason)
    return bound


def bind_http(host: str, port: int, what: str = "HTTP") -> socket.socket:
    """A listening TCP socket on host:port for uvicorn, or PortInUse."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on accepted sockets whose proto is
    # IPPROTO_TCP, and without it every keep-alive response waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; never a live listener
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortInUse(what, host, port, exc.strerror or str(exc)) from None
    sock.set_inheritable(True)
    return sock


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
