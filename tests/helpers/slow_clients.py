"""Clients that hold a server's connections the way a slow or vanished client does, over raw
asyncio sockets (no HTTP library would send a body this badly), beside an honest client; and
what each saw. Every client is bounded in time and closes its socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


def request_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def status_of(head: bytes) -> int | None:
    """The status of an HTTP answer's first line, or None (no answer: cut)."""
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


async def vanish(
    port: int, path: str, body: bytes, *, after: float = 0.5, whole: bool = False
) -> None:
    """Send ``path``'s headers and 10 bytes of ``body`` (or all of it if ``whole``), wait
    ``after`` seconds, hang up."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head(path, len(body)) + (body if whole else body[:10]))
        await writer.drain()
        await asyncio.sleep(after)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class SlowSeen:
    """What the slow clients saw: each cut connection's status (None: closed without an
    answer) and how long it lived."""

    statuses: Counter = field(default_factory=Counter)
    lifetimes: list[float] = field(default_factory=list)


async def trickle(
    port: int, path: str, body: bytes, *, until: float, every: float, seen: SlowSeen
) -> None:
    """Until ``until`` (loop time): connect, send ``path``'s headers, then ``body`` one byte
    every ``every`` seconds; when the server answers or closes, note it and start again."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        began = loop.time()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(every)
            continue
        answer = asyncio.ensure_future(reader.read(64))
        try:
            writer.write(request_head(path, len(body)))
            for byte in range(len(body) - 1):  # never the last one
                done, _ = await asyncio.wait({answer}, timeout=every)
                if done or loop.time() >= until:
                    break
                writer.write(body[byte : byte + 1])
            if loop.time() >= until and not answer.done():
                return  # the test is over; this one was never cut
            head = await answer
        except OSError:
            head = b""
        finally:
            answer.cancel()
            writer.close()
        seen.statuses[status_of(head)] += 1
        seen.lifetimes.append(loop.time() - began)


@dataclass
class HonestSeen:
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def ok_ratio(self) -> float:
        return self.statuses[200] / self.sent if self.sent else 0.0


async def honest(url: str, path: str, body: bytes, *, until: float, every: float) -> HonestSeen:
    """A well-behaved client: ``body`` to ``path`` every ``every`` seconds until ``until``,
    each answer awaited (up to 30 s)."""
    loop = asyncio.get_running_loop()
    seen = HonestSeen()
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while loop.time() < until:
            began = loop.time()
            try:
                answer = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                seen.errors.append(repr(exc))
            else:
                seen.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    seen.predictions.append(answer.json())
            await asyncio.sleep(max(0.0, every - (loop.time() - began)))
    return seen


async def slow_attack(
    url: str, path: str, body: bytes, *, clients: int, seconds: float, every: float = 2.0
) -> tuple[SlowSeen, HonestSeen]:
    """``clients`` slow clients on ``path`` for ``seconds`` beside an honest client sending
    every 50 ms: what each side saw."""
    port = httpx.URL(url).port
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    slow = SlowSeen()
    tasks = [
        asyncio.ensure_future(trickle(port, path, body, until=until, every=every, seen=slow))
        for _ in range(clients)
    ]
    await asyncio.sleep(min(2.0, seconds / 4))  # the slow clients are in first
    try:
        seen = await honest(url, path, body, until=until, every=0.05)
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
    return slow, seen


def in_progress(url: str) -> dict[str, float]:
    """BentoML's ``bentoml_service_request_in_progress`` gauge, by endpoint (summed over the
    workers)."""
    import re

    text = httpx.get(f"{url}/metrics", timeout=30).text
    out: dict[str, float] = Counter()
    pattern = r'^bentoml_service_request_in_progress\{[^}]*endpoint="([^"]+)"[^}]*\}\s+(\S+)$'
    for endpoint, value in re.findall(pattern, text, flags=re.MULTILINE):
        out[endpoint] += float(value)
    return dict(out)


def counter(url: str, name: str, endpoint: str) -> float:
    """A tagserve counter's value for ``endpoint`` (summed over the workers)."""
    import re

    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = rf'^{name}_total\{{[^}}]*endpoint="{re.escape(endpoint)}"[^}}]*\}}\s+(\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE))


def timed(coro: Any) -> tuple[Any, float]:
    began = time.monotonic()
    result = asyncio.run(coro)
    return result, time.monotonic() - began
