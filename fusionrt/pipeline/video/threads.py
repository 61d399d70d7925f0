"""The video loop's thread plumbing: the first failure of any thread stops them all, threads
that hand their error to it, joins that survive Ctrl-C, and queue operations that record how
long each thread waited (``Waits``: where the time goes, and that the bounds hold).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable

from .io import get, put
from ..device.timing import Waits


class Failure:
    """The first error of any thread; recording it stops every stage."""

    def __init__(self, stop: threading.Event):
        self.stop, self.error = stop, None
        self._lock = threading.Lock()

    def __call__(self, e: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = e
        self.stop.set()


def spawn(name: str, work: Callable[[], None], failure: Failure) -> threading.Thread:
    """A (not yet started) daemon thread whose exception goes to ``failure``."""
    def body() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who re-raises it
            failure(e)
    return threading.Thread(target=body, name=name, daemon=True)


def join_all(threads: Iterable[threading.Thread], stop: threading.Event) -> None:
    """Join the started ones; a Ctrl-C while waiting stops them first (none outlives the call)."""
    started = [t for t in threads if t.ident is not None]
    try:
        for t in started:
            t.join()
    except BaseException:
        stop.set()
        for t in started:
            t.join()
        raise


def timed_get(q: queue.Queue, stop: threading.Event, waits: Waits, name: str) -> Any:
    t0 = time.perf_counter()
    item = get(q, stop)
    waits.add(f"{name}.get", time.perf_counter() - t0)
    return item


def timed_put(q: queue.Queue, item: Any, stop: threading.Event, waits: Waits, name: str) -> bool:
    t0 = time.perf_counter()
    ok = put(q, item, stop)
    waits.add(f"{name}.put", time.perf_counter() - t0)
    waits.saw(name, q.qsize())
    return ok
