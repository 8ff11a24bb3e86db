"""Graceful drain: on SIGTERM the service stops taking connections, answers every request it
has received, and exits within ``TAGSERVE_DRAIN_SECONDS``.

What ``bentoml serve`` (BentoML 1.4.39) does without it: the arbiter (circus) sends SIGTERM to
every worker; each worker's uvicorn stops accepting at once, closes its idle keep-alive
connections (a request the client is sending on one at that moment is cut: EOF or reset) and
waits for the requests it is computing; once every worker has exited the arbiter closes the
listening socket, which resets every connection still waiting in its accept queue (clients
that reconnected meanwhile: nobody accepts them any more). Under 8 clients that cut 16
requests.

The drain, in two halves:

- **The arbiter** (the ``bentoml serve`` process, which imports this module too): before it
  signals the workers (:func:`serving.bentoml_private.before_arbiter_stops`), it attaches a
  socket filter to the listening socket that drops new connection requests (TCP SYN without
  ACK), :func:`hold_new_connections`. The kernel then queues no new connection, while the
  connections already queued and those mid-handshake still complete. Clients retry their SYN
  (after 1 s on Linux), and are refused once the listener is shut down: "connection refused",
  nothing sent, nothing lost. The filter also tells the workers that the whole service stops.
- **Each worker** (:class:`Drain`, wired by ``serving.middleware.DrainMiddleware``): on
  SIGTERM it turns ``/readyz`` to 503 at once, answers every request it receives from then on with
  ``Connection: close`` (keep-alive clients get their answer, then reconnect elsewhere),
  keeps accepting for a moment so that the accept queue empties, then shuts the listener down
  for every process (``shutdown()`` acts on the socket, not on one descriptor: nothing is left
  queued to be reset), waits until its requests are answered and its connections closed, and
  hands over to uvicorn's own shutdown before the deadline. A worker stopped alone (its
  listener carries no filter: the others keep serving) only stops accepting in itself.

A worker killed with SIGKILL drains nothing: the requests it was computing or holding are
lost (connection reset), at most its in-flight requests; circus starts a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("bentoml.service.tagserve")

DRAIN_ENV = "TAGSERVE_DRAIN_SECONDS"
# Time for the connections already queued (or mid-handshake) when the filter went on to be
# accepted by the workers before the listener is shut down: loopback handshakes take
# microseconds, a worker's event loop answers within milliseconds unless a model call holds it.
SETTLE_SECONDS = 0.3
# The share of the drain time uvicorn's own shutdown may use at the end (it then cancels).
HANDOVER_SECONDS = 1.0

# --- the socket filter (Linux) ----------------------------------------------------------------

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# Classic BPF run on each TCP segment for the listening socket, from its TCP header: load the
# flags byte (offset 13), keep SYN|ACK, drop (return 0) a bare SYN, accept everything else.
_DROP_SYN = (
    (0x30, 0, 0, 13),  # ld  [13]          (BPF_LD | BPF_B | BPF_ABS)
    (0x54, 0, 0, 0x12),  # and #0x12        (BPF_ALU | BPF_AND | BPF_K)
    (0x15, 0, 1, 0x02),  # jeq #0x02, drop  (BPF_JMP | BPF_JEQ | BPF_K)
    (0x06, 0, 0, 0),  # ret #0           (drop)
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1          (accept)
)


def _filter_program() -> tuple[bytes, Any]:
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in _DROP_SYN)
    buffer = ctypes.create_string_buffer(code, len(code))
    return struct.pack("HL", len(_DROP_SYN), ctypes.addressof(buffer)), buffer


def hold_new_connections(sockets: Iterable[socket.socket]) -> int:
    """Make the listening ``sockets`` drop new connection requests (see the module docstring);
    connections already queued still get accepted. Returns how many sockets took the filter
    (0 where the platform has no socket filters: the drain then only stops each worker)."""
    held = 0
    program, _buffer = _filter_program()  # the buffer must live while the kernel copies it
    for sock in sockets:
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
        except OSError as exc:
            logger.warning("drain: cannot hold new connections on %s: %s", sock, exc)
            continue
        held += 1
    return held


def holds_new_connections(sock: socket.socket) -> bool:
    """Whether :func:`hold_new_connections` was applied to ``sock`` (by any process)."""
    try:
        return len(sock.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 64)) > 0
    except OSError:
        return False


def on_arbiter_stop(arbiter: Any) -> None:
    """Called in the ``bentoml serve`` process when it is told to stop, before its workers
    are signalled."""
    sockets = list(getattr(arbiter, "sockets", {}).values())
    held = hold_new_connections(sockets)
    logger.info("drain: stopping; %d listening socket(s) take no new connections", held)


# --- the worker --------------------------------------------------------------------------------


class Drain:
    """One worker's drain (see the module docstring). ``draining`` and ``in_flight`` are read
    and changed on the worker's event loop only."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False
        self.in_flight = 0
        self.server: Any = None  # uvicorn's Server, found through its SIGTERM handler
        self.exit_handler: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> bool:
        """Take over SIGTERM from uvicorn in this worker (call on the event loop, after
        uvicorn has installed its handlers: at lifespan start-up)."""
        if self.server is not None:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        handler = signal.getsignal(signal.SIGTERM)
        server = getattr(handler, "__self__", None)
        if server is None or not hasattr(server, "server_state"):
            return False  # not under uvicorn (in-process tests)
        self.server, self.exit_handler = server, handler
        self.loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_signal)
        return True

    def _on_signal(self, sig: int, frame: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.begin)

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        assert self.loop is not None
        self.loop.create_task(self.run())
        # A bound whatever happens on the event loop (a model call stuck in C code).
        threading.Thread(target=self._watchdog, name="tagserve-drain", daemon=True).start()

    def _watchdog(self) -> None:
        time.sleep(self.seconds)
        logger.error("drain: not done after %s s (%s): exiting", self.seconds, DRAIN_ENV)
        os._exit(1)

    def listeners(self) -> list[socket.socket]:
        found = []
        for server in getattr(self.server, "servers", []):
            for sock in getattr(server, "sockets", None) or []:
                # asyncio's TransportSocket: a socket of our own on the same descriptor.
                found.append(socket.socket(fileno=os.dup(sock.fileno())))
        return found

    async def run(self) -> None:
        began = time.monotonic()
        deadline = began + self.seconds
        listeners = self.listeners()
        whole_service = any(holds_new_connections(s) for s in listeners)
        logger.info(
            "drain: SIGTERM; /readyz answers 503; answering what was received (%s)",
            "the service stops" if whole_service else "this worker stops",
        )
        if whole_service:
            # Accept what is queued, then shut the listener down for every process: what
            # connects afterwards is refused, nothing queued is reset.
            await asyncio.sleep(min(SETTLE_SECONDS, self.seconds / 4))
            for sock in listeners:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
        for server in getattr(self.server, "servers", []):
            server.close()  # this worker accepts no more
        for sock in listeners:
            sock.close()  # our duplicate descriptor only
        state = self.server.server_state
        handover = deadline - HANDOVER_SECONDS
        while (self.in_flight or state.connections) and time.monotonic() < handover:
            await asyncio.sleep(0.05)
        logger.info(
            "drain: %d request(s) and %d connection(s) left after %.2f s; shutting down",
            self.in_flight,
            len(state.connections),
            time.monotonic() - began,
        )
        self.server.config.timeout_graceful_shutdown = max(0.1, deadline - time.monotonic() - 0.2)
        self.exit_handler(signal.SIGTERM, None)
