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
