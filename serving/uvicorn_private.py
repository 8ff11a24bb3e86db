"""The private uvicorn internals the service relies on, in one place, checked against the one
uvicorn version they were read from (a newer uvicorn fails here, loudly, at import).

uvicorn writes an answer's status line and headers to the socket in one write and its body in
another. A worker killed between the two (a lost host, an OOM kill) leaves its client a 200
without a body: the load balancer has already passed the head on, so it cannot retry the
request elsewhere, as it does for an answer that never started. One write holding both makes
an answer either sent whole or not at all. ``serving.middleware.WholeAnswers`` already hands
uvicorn the start and the first body with no other task between them.
"""

from __future__ import annotations

from typing import Any

import uvicorn

KNOWN_VERSION = "0.54.0"
if uvicorn.__version__ != KNOWN_VERSION:  # pragma: no cover - guarded by the lock
    raise ImportError(
        f"tagserve's service uses uvicorn {KNOWN_VERSION} internals (serving/uvicorn_private.py); "
        f"this is uvicorn {uvicorn.__version__}: check them and update KNOWN_VERSION"
    )


class HeldWrites:
    """A transport whose writes are held until :meth:`release`, then leave as one."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def release(self) -> Any:
        """Write what is held in one write; the transport underneath."""
        if self.parts:
            self.transport.write(b"".join(self.parts))
            self.parts = []
        return self.transport

    def close(self) -> None:
        self.release().close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _cycles() -> list[type]:
    """uvicorn's request-response cycles: h11's, and httptools' when it is installed."""
    from uvicorn.protocols.http import h11_impl

    cycles = [h11_impl.RequestResponseCycle]
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional; uvicorn's "auto" then takes h11
        return cycles
    return [*cycles, httptools_impl.RequestResponseCycle]


def one_write_answers() -> None:
    """Hold the head uvicorn writes for an answer's start until the next message's write
    (the first body part), and send both in one write. Idempotent."""
    for cycle in _cycles():
        if getattr(cycle, "_tagserve_one_write", False):
            continue
        cycle.send = _held_head(cycle.send)
        cycle._tagserve_one_write = True


def _held_head(send: Any) -> Any:
    async def held_head_send(self: Any, message: dict) -> None:
        if message["type"] == "http.response.start":
            held = self.transport = HeldWrites(self.transport)
            try:
                await send(self, message)
            except BaseException:
                self.transport = held.transport  # nothing was written: the head is invalid
                raise
            return
        try:
            await send(self, message)
        finally:
            if isinstance(self.transport, HeldWrites):
                self.transport = self.transport.release()

    return held_head_send
