"""The private BentoML internals the service relies on, in one place, checked against the
one BentoML version they were read from (a newer BentoML fails here, loudly, at import)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bentoml

KNOWN_VERSION = "1.4.39"
if bentoml.__version__ != KNOWN_VERSION:  # pragma: no cover - guarded by the lock
    raise ImportError(
        f"tagserve's service uses BentoML {KNOWN_VERSION} internals (serving/bentoml_private.py); "
        f"this is BentoML {bentoml.__version__}: check them and update KNOWN_VERSION"
    )

from _bentoml_impl.serde import JSONSerde  # noqa: E402  (how it reads a JSON body)
from _bentoml_sdk.io_models import IORootModel  # noqa: E402  (BentoML 1.4's root input)


def arguments() -> dict[str, Any]:
    """The bento arguments (``bentoml serve/build --arg``, or those a bento carries)."""
    return dict(vars(bentoml.use_arguments()))


def record_arguments(values: Mapping[str, Any]) -> None:
    """Add ``values`` to the bento arguments where they are not set yet.

    ``bentoml build`` stores the arguments in bento.yaml and ``bentoml serve`` passes them to
    every worker (the arguments given on the command line win).
    """
    from bentoml._internal.utils.args import set_arguments

    set_arguments({k: v for k, v in values.items() if v is not None}, override=False)


def reset_arguments() -> None:
    """Forget the bento arguments (tests building several services in one process)."""
    from bentoml._internal.utils.args import set_arguments

    set_arguments({})


def put_outermost_first() -> None:
    """Let a service's ASGI middleware run before BentoML's own (metrics, tracing, access
    log, timeout): those marked ``bentoml_outermost = True`` go first in the app's stack.

    ``Service.add_asgi_middleware`` puts middleware inside BentoML's; a load-shedding refusal
    made there still pays for all of them, per request. Idempotent.
    """
    from _bentoml_impl.server.app import ServiceAppFactory

    if getattr(ServiceAppFactory, "_tagserve_outermost_first", False):
        return
    built = ServiceAppFactory.middlewares.fget

    def middlewares(self: Any) -> list[Any]:
        stack = built(self)
        first = [m for m in stack if getattr(m.cls, "bentoml_outermost", False)]
        return first + [m for m in stack if m not in first]

    ServiceAppFactory.middlewares = property(middlewares)
    ServiceAppFactory._tagserve_outermost_first = True


def cancellable_timeouts() -> None:
    """Make BentoML's request timeout (``TimeoutMiddleware``, ``traffic.timeout``) end with the
    request it times, and cancel it when it is itself cancelled. Idempotent.

    BentoML 1.4.39's runs the app in a task of its own and waits for the first message of an
    answer or the timeout: a request that ends without an answer (its client left) is held,
    with BentoML's in-progress gauge, until the timeout; and a cancelled request (its client
    left while it waited, ``serving.middleware.LoadShedding``) leaves that task running, its
    entry in an adaptive batch queued. Here the wait also ends when the task does, and a
    cancellation reaches the task.
    """
    import asyncio

    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from starlette.responses import JSONResponse

    if getattr(TimeoutMiddleware, "_tagserve_cancellable", False):
        return

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        answering = asyncio.Event()

        async def answer(message: Any) -> None:
            answering.set()
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, answer))
        started = asyncio.ensure_future(answering.wait())
        try:
            await asyncio.wait({work, started}, timeout=self.timeout, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            # The task ends before this does: the middleware around (tracing spans, metrics)
            # still holds the request's state while it unwinds.
            work.cancel()
            await asyncio.wait({work})
            raise
        finally:
            started.cancel()
        if not work.done() and not answering.is_set():
            work.cancel()
            late = f"Not able to process the request in {self.timeout} seconds"
            return await JSONResponse({"error": late}, status_code=504)(scope, receive, send)
        try:
            await work
        except asyncio.CancelledError:
            work.cancel()
            await asyncio.wait({work})
            raise

    TimeoutMiddleware.__call__ = call
    TimeoutMiddleware._tagserve_cancellable = True


def before_arbiter_stops(callback: Any) -> None:
    """Run ``callback(arbiter)`` in the ``bentoml serve`` process when it is told to stop
    (SIGTERM, SIGINT, SIGQUIT), before it signals its workers. Idempotent.

    BentoML's arbiter is circus': its ``SysHandler`` turns those signals into a ``quit``
    command, which stops every worker (SIGTERM) and then closes the listening sockets. This
    process imports the service module as well (``serve_http`` loads it), so the service can
    wrap the handler here; a worker never creates a ``SysHandler``.
    """
    from circus.sighandler import SysHandler

    if getattr(SysHandler, "_tagserve_before_stop", None) is not None:
        SysHandler._tagserve_before_stop = callback
        return
    SysHandler._tagserve_before_stop = callback

    def wrap(name: str) -> None:
        original = getattr(SysHandler, name)

        def handle(self: Any) -> None:
            try:
                SysHandler._tagserve_before_stop(self.controller.arbiter)
            except Exception:  # never keep the server from stopping
                logging.getLogger("bentoml.service.tagserve").exception("before stopping")
            original(self)

        setattr(SysHandler, name, handle)

    for name in ("handle_term", "handle_int", "handle_quit"):
        wrap(name)


# --- metrics and monitoring: one folder per server, whatever BentoML home it shares ---------

SERVER_FOLDER_PREFIX = "tagserve-server-"


def server_folder(arbiter_pid: int) -> Path:
    """The folder of the server whose ``bentoml serve`` process is ``arbiter_pid``: named
    after its host, pid and start time, so that neither a pid reused later nor another
    container's pid 1 on a shared volume can share it."""
    import socket

    import psutil

    started = int(psutil.Process(arbiter_pid).create_time() * 1000)
    name = f"{SERVER_FOLDER_PREFIX}{socket.gethostname()}-{arbiter_pid}-{started}"
    return Path(tempfile.gettempdir()) / name


def remove_dead_servers_folders() -> None:
    """Remove this host's server folders whose server is gone (killed: no exit handler ran),
    told apart from a live server by its pid and start time."""
    import socket

    import psutil

    prefix = f"{SERVER_FOLDER_PREFIX}{socket.gethostname()}-"
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid, _, started = folder.name.removeprefix(prefix).partition("-")
        try:
            alive = int(psutil.Process(int(pid)).create_time() * 1000) == int(started)
        except (ValueError, psutil.Error):
            alive = False
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)


def own_metrics_folder() -> None:
    """Give this server a metrics folder (and so a monitoring folder) of its own.

    BentoML 1.4's ``serve_http`` deletes and recreates ``$BENTOML_HOME/prometheus_multiproc_dir``
    when it starts (``ensure_prometheus_dir``, before it loads the service) and hands that one
    folder to its workers as ``PROMETHEUS_MULTIPROC_DIR``: a second server on the same home
    wiped the first one's counters and its monitoring folder (``serving.monitoring`` keeps it
    in there). A worker (``server_context.worker_index`` set) moves to its server's own folder
    before prometheus_client is imported, which reads the variable once. The ``bentoml serve``
    process removes its folder when it exits. Idempotent; does nothing outside a server.
    """
    from bentoml._internal.context import server_context

    if server_context.worker_index is None:  # the arbiter, or no server at all
        if not getattr(own_metrics_folder, "_cleanup", False):
            mine = server_folder(os.getpid())
            atexit.register(shutil.rmtree, mine, ignore_errors=True)
            own_metrics_folder._cleanup = True
            remove_dead_servers_folders()
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = server_folder(os.getppid()) / "prometheus_multiproc_dir"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


# --- logs: a line per client error, tracebacks for the service's own failures --------------

# BentoML logs every exception an API raises with its traceback, at ERROR, through this logger
# (``log_exception``): a client's invalid record too. serving.middleware.ErrorAnswers logs one
# line for each client error instead.
BENTOML_EXCEPTION_LOGGER = "bentoml._internal.server.http_app"


def is_client_error(error: BaseException | None) -> bool:
    """Whether an API's exception is the client's (a validation error, a 4xx) or an overload
    (BentoML's batcher shedding a request: 503): no traceback for those."""
    from bentoml.exceptions import BentoMLException, ServiceUnavailable
    from pydantic import ValidationError

    if isinstance(error, ValidationError | ServiceUnavailable):
        return True
    return isinstance(error, BentoMLException) and int(error.error_code) < 500


class ClientErrorTracebacks(logging.Filter):
    """Drops BentoML's traceback records of client errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not is_client_error(error)


def quiet_client_error_tracebacks() -> None:
    """Install :class:`ClientErrorTracebacks` on BentoML's exception logger (once)."""
    target = logging.getLogger(BENTOML_EXCEPTION_LOGGER)
    if not any(isinstance(f, ClientErrorTracebacks) for f in target.filters):
        target.addFilter(ClientErrorTracebacks())


# --- adaptive batching: a request is never split --------------------------------------------


def whole_requests_batching(calls: int = 1) -> None:
    """Make BentoML's adaptive batcher merge whole requests only, and run up to ``calls``
    model calls at once (BentoML: one).

    BentoML 1.4's ``CorkDispatcher._get_inputs`` cuts a request of more rows than
    ``max_batch_size`` into chunks run one after another, and cancels the chunks still queued
    once the request is older than ``max_latency_ms``: a valid request alone on an idle server
    got a 503 after 2 s when its model was slow. Here a batch takes whole requests while they
    fit in ``max_batch_size`` rows, and at least one, however large: its model call starts at
    once and runs to its end. The latency budget then bounds only the wait before a call
    starts (what the optimizer estimates), never a call that has started. A request that was
    cancelled while queued (its client left: its future is done) is dropped, not computed;
    the others of its batch are not affected. Idempotent.
    """
    import asyncio
    import time

    from bentoml._internal.marshal.dispatcher import CorkDispatcher, Job, NonBlockSema

    CorkDispatcher._tagserve_calls = calls
    if getattr(CorkDispatcher, "_tagserve_whole_requests", False):
        return

    def whole_jobs(self: Any, num_batches: int | None = None) -> Any:
        limit = self.max_batch_size if num_batches is None else num_batches
        rows = 0
        while self._queue:
            try:
                size = self.get_batch_size(self._queue[0].data)
            except Exception:  # as BentoML: a size it cannot read counts as one
                size = 1
            if rows and rows + size > limit:
                return
            rows += size
            yield self._queue.popleft()

    async def queued(self: Any, data: Any) -> Any:
        """BentoML's ``inbound_call``, but a request that finds a call free starts it at
        once (with whatever else waits) rather than an event-loop turn later, and a request
        cancelled while queued (its client left) is dropped."""
        future = self._loop.create_future()
        self._queue.append(Job(time.time(), data, future))
        if self._controller is None or not _started_when_free(self):
            # the loop starts it when a call is free, or sheds it at its deadline
            async with self._wake_event:
                self._wake_event.notify_all()
        try:
            return await future
        except asyncio.CancelledError:
            for job in [job for job in self._queue if job.future.done()]:
                self._queue.remove(job)
            raise

    made = CorkDispatcher.__init__

    def with_calls(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        self._sema = NonBlockSema(self._tagserve_calls)  # the calls that may run at once

    CorkDispatcher.__init__ = with_calls
    CorkDispatcher._get_inputs = whole_jobs
    CorkDispatcher.inbound_call = queued
    CorkDispatcher.controller = released_when_free
    CorkDispatcher.outbound_call = _wakes_when_done(CorkDispatcher.outbound_call)
    CorkDispatcher._tagserve_whole_requests = True


async def released_when_free(self: Any) -> None:
    """The batcher's loop: the moment a call is free (``whole_requests_batching``'s
    ``calls``) and requests wait, one call takes all of them (up to ``max_batch_size`` rows);
    while the calls run, the next requests queue and become the next batch. A request that
    waits ``max_latency_ms`` before its call starts gets BentoML's 503 (its future
    cancelled), as in BentoML.

    BentoML 1.4.39's loop polls every millisecond and holds a lone request back for the
    average wait it has seen, to let a batch grow: under a steady load the waits feed the
    average they are measured against, and every request pays it. Here a batch grows only
    from the requests that arrive while the model is busy, which is when batching pays."""
    import asyncio
    import time

    while True:
        try:
            async with self._wake_event:
                while not _started_when_free(self):
                    if not self._queue:
                        await self._wake_event.wait()
                        continue
                    deadline = self._queue[0].enqueue_time + self.max_latency
                    if deadline <= time.time():
                        self._queue.popleft().future.cancel()  # BentoML's 503
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake_event.wait(), deadline - time.time())
        except asyncio.CancelledError:
            raise
        except Exception:  # as BentoML: the loop outlives a failed dispatch
            logging.getLogger(__name__).exception("adaptive batching: a dispatch failed")


def _started_when_free(self: Any) -> bool:
    """Start a call on every request queued, if requests wait and a call is free: whether it
    did. The one place a batch starts (on arrival, when a call ends, or by the loop)."""
    if not self._queue or self._sema.is_locked():
        return False
    self._sema.acquire()
    self._loop.create_task(self.outbound_call(tuple(self._get_inputs())))
    return True


def _wakes_when_done(call: Any) -> Any:
    async def outbound_call(self: Any, jobs: Any, training: bool = False) -> Any:
        try:
            return await call(self, jobs, training)
        finally:
            # The model is free: what queued meanwhile is the next batch, started here rather
            # than an event-loop turn later by the loop (which still sees to the deadlines).
            _started_when_free(self)
            async with self._wake_event:
                self._wake_event.notify_all()

    return outbound_call


# --- adaptive batching: what it merges ------------------------------------------------------


def batch_checked_rows() -> None:
    """Let BentoML's adaptive batcher merge and cut :class:`serving.batching.CheckedRows`
    (the batchable APIs' input) as runs of requests' frames: a container of its own, found by
    the exact type. A list would be merged and cut a record at a time, after BentoML's
    registry had tried its nine other containers on it. Idempotent."""
    import itertools

    from bentoml._internal.runner.container import DataContainer, DataContainerRegistry

    from serving.batching import CheckedRows

    class CheckedRowsContainer(DataContainer):
        @classmethod
        def batches_to_batch(cls, batches: Any, batch_dim: int = 0) -> tuple[Any, list[int]]:
            return CheckedRows.merged(batches), [0, *itertools.accumulate(map(len, batches))]

        @classmethod
        def batch_to_batches(cls, batch: Any, indices: Any, batch_dim: int = 0) -> list[Any]:
            return [batch[a:b] for a, b in itertools.pairwise(indices)]

        @classmethod
        def get_batch_size(cls, batch: Any, batch_dim: int) -> int:
            return len(batch)

        @classmethod
        def to_payload(cls, batch: Any, batch_dim: int) -> Any:
            raise NotImplementedError("checked rows stay in the worker that read them")

        @classmethod
        def from_payload(cls, payload: Any) -> Any:
            raise NotImplementedError("checked rows stay in the worker that read them")

    DataContainerRegistry.register_container(CheckedRows, CheckedRows, CheckedRowsContainer)


# --- per-request cost ------------------------------------------------------------------------


def bound_apis_once() -> None:
    """Bind a service instance's API methods once, not on every request.

    BentoML 1.4.39's ``APIMethod.__get__`` builds a new wrapper, with ``inspect.signature``,
    each time a method is looked up on the instance, and its app looks the method up twice a
    request (``api_endpoint``, ``batch_infer``): a fixed cost per request, paid again by
    every record of a single-record load. The wrapper depends only on the method and the
    instance, so the first one is kept in the instance's ``__dict__``. Idempotent.
    """
    from _bentoml_sdk.method import APIMethod

    if getattr(APIMethod, "_tagserve_bound_once", False):
        return
    bind = APIMethod.__get__

    def bound_once(self: Any, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        kept = instance.__dict__.setdefault("_tagserve_bound_apis", {})
        method = kept.get(self.name)
        if method is None:
            method = kept[self.name] = bind(self, instance, owner)
        return method

    APIMethod.__get__ = bound_once
    APIMethod._tagserve_bound_once = True


__all__ = [
    "IORootModel",
    "JSONSerde",
    "before_arbiter_stops",
    "bound_apis_once",
    "cancellable_timeouts",
    "arguments",
    "batch_checked_rows",
    "is_client_error",
    "own_metrics_folder",
    "put_outermost_first",
    "quiet_client_error_tracebacks",
    "record_arguments",
    "reset_arguments",
    "whole_requests_batching",
]
