"""An answer's start and body reach the server's send together: no other task runs between
them, even when the app switches tasks after sending its start; and uvicorn, serving a real
socket, writes them in one write."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from serving import uvicorn_private
from serving.middleware import WholeAnswers


async def app(scope: dict, receive, send) -> None:
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await asyncio.sleep(0.01)  # the event loop runs other requests' work here
    await send({"type": "http.response.body", "body": b"{}"})


async def headless(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})


def run(application, events: list[str]) -> None:
    async def send(message: dict) -> None:
        events.append(message["type"])

    async def other() -> None:
        for _ in range(5):
            events.append("other task")
            await asyncio.sleep(0.002)

    async def both() -> None:
        scope = {"type": "http", "path": "/predict"}
        await asyncio.gather(application(scope, None, send), other())

    asyncio.run(both())


def test_the_start_waits_for_the_body_and_both_go_together() -> None:
    events: list[str] = []
    run(WholeAnswers(app), events)
    start = events.index("http.response.start")
    assert events[start + 1] == "http.response.body"
    assert "other task" in events[:start]  # the other task did run while the app waited


def test_without_the_middleware_another_task_runs_between_them() -> None:
    events: list[str] = []
    run(app, events)
    start = events.index("http.response.start")
    assert events[start + 1] == "other task"


def test_an_answer_without_a_body_message_still_starts() -> None:
    events: list[str] = []
    run(WholeAnswers(headless), events)
    assert "http.response.start" in events


class TappedH11(H11Protocol):
    """uvicorn's h11 protocol whose socket writes are also recorded (the writes still go)."""

    writes: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[override]
        write = transport.write

        def tapped(data: bytes) -> None:
            TappedH11.writes.append(bytes(data))
            write(data)

        transport.write = tapped
        super().connection_made(transport)


async def streamed(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"second"})


def served(application) -> tuple[bytes, list[bytes]]:
    """One GET to ``application`` served by uvicorn over a real socket on 127.0.0.1: the
    bytes the client read, and the socket writes the server made."""
    uvicorn_private.one_write_answers()
    TappedH11.writes = []
    config = uvicorn.Config(WholeAnswers(application), lifespan="off", log_level="warning")
    config.load()
    state = ServerState()

    async def exchange() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: TappedH11(config, state, {}), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        return answer

    return asyncio.run(exchange()), TappedH11.writes


def test_uvicorn_writes_the_head_and_the_body_in_one_write() -> None:
    """A worker killed between two writes would leave a head without its body."""
    answer, writes = served(app)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n{}")
    assert writes == [answer]


def test_a_streamed_answer_starts_with_its_head_and_first_part_in_one_write() -> None:
    answer, writes = served(streamed)
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"first\r\n")
    assert b"".join(writes) == answer and answer.endswith(b"second\r\n0\r\n\r\n")
    assert len(writes) == 3  # then the second part, then the chunked end
