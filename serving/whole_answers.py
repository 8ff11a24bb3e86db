"""Answers leave a worker whole: the start of an HTTP answer (status and headers) is held until
its first body part and both are written together.

Inside BentoML's stack an answer's start and its body are sent with other requests' work in
between (the event loop switches tasks), so a server killed at that moment leaves an answer
with headers and no body. A load balancer cannot retry that one (its client already has the
headers); with both written in one go, a killed server's requests get no answer at all, which
HAProxy's ``retry-on empty-response`` sends to another server.
"""

from __future__ import annotations

from typing import Any


class WholeAnswers:
    """Holds ``http.response.start`` until the first ``http.response.body``. Outermost: the
    server's own send is the next thing it calls."""

    bentoml_outermost = True  # serving.bentoml_private.put_outermost_first

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[dict] = []

        async def send_whole(message: dict) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if held and message["type"] == "http.response.body":
                await send(held.pop())  # no await in between yields to another task
            await send(message)

        await self.app(scope, receive, send_whole)
        if held:  # an answer without a body message: its start alone
            await send(held.pop())
