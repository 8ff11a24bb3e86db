"""An answer's start and body reach the server's send together: no other task runs between
them, even when the app switches tasks after sending its start."""

from __future__ import annotations

import asyncio

from serving.middleware import WholeAnswers


async def app(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
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
