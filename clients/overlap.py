"""Reading, computing and writing overlapped, in input order, in bounded memory.

:func:`ordered_map` reads items on a thread of its own, computes ``work`` on each in a pool
of threads, and hands the results back in input order to the caller, which writes them. The
heavy parts of offline scoring run outside the GIL (Arrow's parsers, the compiled forest,
Parquet writing), so the three stages run at once on as many cores as there are.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

_END = object()


def ordered_map(
    work: Callable[[In], Out], items: Iterator[In], *, workers: int, ahead: int
) -> Iterator[Out]:
    """``work(item)`` for each of ``items``, in their order.

    At most ``ahead`` items are between being read and being handed back (read, waiting,
    computing or computed), so memory holds at most that many. The first error (reading or
    computing) is raised where its item's result would have come, after every earlier result:
    what a sequential loop would have done. Closing the iterator early stops the reader and
    drops the items it holds.
    """
    if workers < 1 or ahead < 1:
        raise ValueError("workers and ahead must be at least 1")
    slots = threading.Semaphore(ahead)
    futures: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="work")
    reader = threading.Thread(
        target=_read,
        args=(items, work, pool, slots, futures, stop),
        name="read",
        daemon=True,  # a read blocked in I/O never keeps the process alive
    )
    reader.start()
    try:
        while True:
            got = futures.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            result = got.result()
            slots.release()
            yield result
    finally:
        stop.set()
        slots.release()  # wakes the reader if it waits for a slot
        while True:  # results nobody will take
            try:
                got = futures.get_nowait()
            except queue.Empty:
                break
            if isinstance(got, Future):
                got.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _read(
    items: Iterator[Any],
    work: Callable[[Any], Any],
    pool: ThreadPoolExecutor,
    slots: threading.Semaphore,
    futures: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    try:
        while True:
            slots.acquire()
            if stop.is_set():
                return
            item = next(items, _END)
            if item is _END or stop.is_set():
                return
            futures.put(pool.submit(work, item))
    except BaseException as exc:  # the reader's error, in its place in the order
        futures.put(exc)
    finally:
        futures.put(_END)
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a generator's files are closed on the thread that runs it
