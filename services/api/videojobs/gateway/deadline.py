"""A deadline on every call the gateway makes to the api, so a REST request never waits for ever.

Without one, an api that stops answering (a frozen database under it, a stalled node, a network that drops
packets) held every REST request that reached it, and the connection it came on, for as long as the stall
lasted. With it, such a request gets a timeout problem (504) after ``seconds`` and the client can retry.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc


class DefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    """Give each unary call that has no timeout of its own ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any,
                                    request: Any) -> Any:
        if client_call_details.timeout is None:
            client_call_details = client_call_details._replace(timeout=self.seconds)
        return await continuation(client_call_details, request)
