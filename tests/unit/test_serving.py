"""Listening sockets of the composition roots."""

import asyncio
import socket

from videojobs.common.serving import bind_http


def test_http_connections_are_accepted_with_nodelay():
    # Without TCP_NODELAY on the accepted sockets a keep-alive response waited ~40 ms for the
    # client's delayed ACK (uvicorn writes headers and body separately): 45 ms per frame image.
    listening = bind_http("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname())
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value

    assert asyncio.run(accepted_nodelay()) != 0


def test_a_stop_signal_delivered_to_another_thread_still_stops_the_main_thread():
    # The kernel may hand SIGTERM to any thread; an untimed wait in the main thread then slept through it
    # (a worker ignored a rolling deploy's SIGTERM in the segments e2e test).
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import signal, threading, time
        from videojobs.common.serving import stop_on_signals, wait_until_stopped
        stop = stop_on_signals()
        busy = threading.Thread(target=time.sleep, args=(30,), daemon=True)
        busy.start()
        threading.Timer(0.3, signal.pthread_kill, (busy.ident, signal.SIGTERM)).start()
        wait_until_stopped(stop)
        print("stopped")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert run.returncode == 0 and run.stdout.strip() == "stopped", run.stderr
