"""Servers that vanish without a word: their host died, or a partition drops every packet.

Nothing resets such a connection, so the kernel alone would keep retrying it for ~15 minutes
(``tcp_retries2``) and every call on it would hang that long: a pooled database connection, its
pre-ping, a query waiting for its answer, the queue's NATS connection. The clients notice in seconds
and connect afresh, reaching the server again where its address now leads (a new host, a healed
path). The machine's Postgres and NATS are reached through a ``BlackHoleLink`` (scripts/servers.py), a
network namespace whose packets can be made to vanish; they themselves are never touched.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import load_script
from videojobs.common.adapters.nats_queue import JetStreamQueue
from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.adapters.sql.migrate import upgrade
from videojobs.common.adapters.sql.repository import SqlJobRepository, database_unavailable_is_temporary
from videojobs.common.errors import TemporaryFault
from videojobs.common.job import Job

servers = load_script("servers")
POSTGRES = ("127.0.0.1", 5432)
NATS = ("127.0.0.1", 4222)
HUNG = 60  # seconds after which a call counts as hung (on the kernel's defaults it would be ~15 minutes)

needs_black_holes = pytest.mark.skipif(bool(servers.black_holes_unavailable()),
                                       reason=servers.black_holes_unavailable() or "available")


class Call:
    """`fn` running in a thread of its own; ``outcome()`` fails the test if it is still running HUNG seconds
    on, else gives {"value": ...} or {"error": ...}."""

    def __init__(self, fn) -> None:
        self._outcome: dict = {}
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self._outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self._outcome["error"] = exc

    def outcome(self) -> dict:
        self._thread.join(HUNG)
        assert not self._thread.is_alive(), f"still waiting after {HUNG} s on a server that vanished"
        return self._outcome


@pytest.fixture
def schema():
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()


def tcp_options(engine: sa.Engine) -> tuple[int, int]:
    """(SO_KEEPALIVE, TCP_USER_TIMEOUT in ms) of a pooled connection's socket."""
    with engine.connect() as conn:
        fd = conn.connection.dbapi_connection.pgconn.socket
        sock = socket.socket(fileno=socket.dup(fd))
        try:
            return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
        finally:
            sock.close()


def test_database_connections_give_up_on_a_silent_server_unless_the_url_says_otherwise(schema):
    engine = make_engine(f"postgresql+psycopg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test", schema)
    own = make_engine(f"postgresql+psycopg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test?tcp_user_timeout=30000",
                      schema)
    try:
        assert tcp_options(engine) == (1, 10_000)
        assert tcp_options(own) == (1, 30_000)
    finally:
        engine.dispose()
        own.dispose()


@pytest.fixture
def linked_engine(schema):
    """(link, engine): an engine on a schema of its own whose connections go through a BlackHoleLink."""
    with servers.BlackHoleLink(*POSTGRES) as link:
        engine = make_engine(f"postgresql+psycopg://postgres@{link.endpoint}/test", schema)
        try:
            yield link, engine
        finally:
            engine.dispose()


@needs_black_holes
def test_a_pooled_database_connection_whose_server_vanished_is_replaced(linked_engine):
    """The pool's pre-ping on the silent connection gives up, and a new connection answers the call."""
    link, engine = linked_engine
    upgrade(engine)
    repo = SqlJobRepository(engine)
    job = Job.submit("yolo")
    repo.add(job)
    assert link.drop_open(), "the pool holds no connection to silence"
    outcome = Call(lambda: repo.get(job.job_id)).outcome()
    assert "error" not in outcome, outcome
    assert outcome["value"].job_id == job.job_id


@needs_black_holes
def test_a_query_whose_server_vanishes_before_answering_is_a_temporary_fault(linked_engine, schema):
    """The request was delivered; the answer never comes. Keepalive probes find the server gone."""
    link, engine = linked_engine
    marker = f"-- {schema}"

    def long_query() -> None:
        with database_unavailable_is_temporary(), engine.connect() as conn:
            conn.execute(sa.text(f"select pg_sleep(3600) {marker}"))

    try:
        query = Call(long_query)
        servers.wait_for(lambda: link.open_client_ports(), 10, "the query's connection")
        time.sleep(0.5)  # the query has reached the server and is running
        link.drop_open()
        outcome = query.outcome()
        assert isinstance(outcome.get("error"), TemporaryFault), outcome
    finally:
        admin = sa.create_engine(f"postgresql+psycopg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test")
        with admin.begin() as conn:  # its server-side backend would sleep on for an hour
            conn.execute(sa.text("select pg_terminate_backend(pid) from pg_stat_activity "
                                 "where query like :q and pid <> pg_backend_pid()"), {"q": f"%{marker}"})
        admin.dispose()


@needs_black_holes
def test_the_queue_reconnects_when_its_nats_server_vanished():
    suffix = uuid.uuid4().hex[:10]
    names = {"stream": f"VJTEST_{suffix}", "subject": f"videojobs.test.{suffix}", "durable": f"workers_{suffix}"}
    with servers.BlackHoleLink(*NATS) as link:
        q = JetStreamQueue(f"nats://{link.endpoint}", **names, ack_wait=5, op_timeout=1.0)
        try:
            first = str(uuid.uuid4())
            q.enqueue(first)
            assert link.drop_open(), "the queue holds no connection to silence"
            later = str(uuid.uuid4())

            def enqueue_until_answered() -> int:
                faults = 0
                while True:
                    try:
                        q.enqueue(later)
                        return faults
                    except TemporaryFault:  # the calls meanwhile time out, or find the client reconnecting
                        faults += 1
                        time.sleep(0.5)

            outcome = Call(enqueue_until_answered).outcome()
            assert outcome.get("value", 0) > 0, outcome  # the silent connection was in use until found out
            got = {q.dequeue(timeout=2), q.dequeue(timeout=2)}
            assert got == {first, later}
        finally:
            q.delete_stream()
            q.close()


@needs_black_holes
def test_the_gateway_reconnects_when_its_api_vanished(api):
    """The gateway's channel to the api (one long-lived HTTP/2 connection) finds the silent one dead by
    keepalive pings and connects afresh; until then each call ends at the gateway's call deadline."""
    from fastapi.testclient import TestClient

    from videojobs.common.config import Settings
    from videojobs.gateway.app import create_app

    unknown = f"/video/status/{uuid.uuid4()}"
    with servers.BlackHoleLink("127.0.0.1", api.port) as link:
        app = create_app(Settings(api_call_timeout_seconds=2), link.endpoint)
        with TestClient(app) as client:
            assert client.get(unknown).status_code == 404  # answered by the api
            assert link.drop_open(), "the gateway holds no connection to silence"

            def read_until_answered() -> int:
                failures = 0
                while client.get(unknown).status_code != 404:
                    failures += 1
                    time.sleep(0.2)
                return failures

            outcome = Call(read_until_answered).outcome()
            assert outcome.get("value", 0) > 0, outcome  # the silent connection was in use until found out


def test_our_servers_accept_our_clients_keepalive_pings():
    """A client pinging an idle connection more often than its server accepts is sent away ("too_many_pings",
    then a reconnect). Ours accept a ping every 5 s without calls (our clients ping every 10 s). gRPC's
    default server (one per 5 minutes) fails this test: it sends the channel away at the third ping."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from videojobs.common.serving import KEEPALIVE_CLIENT_OPTIONS, grpc_server

    made = grpc_server(2)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), made)
    port = made.add_insecure_port("127.0.0.1:0")
    made.start()
    as_often_as_accepted = dict(KEEPALIVE_CLIENT_OPTIONS) | {"grpc.keepalive_time_ms": 5_000}
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=list(as_often_as_accepted.items()))
    states: list[str] = []
    channel.subscribe(lambda state: states.append(state.name))
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        time.sleep(17)  # three pings on an idle connection; gRPC's default server sends it away at the third
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        channel.close()
        made.stop(0)
    assert "CONNECTING" not in states[states.index("READY"):], states  # never sent away
