"""Dynamic batching: work items from concurrent requests share one engine call.

A worker thread takes the first queued item, then waits at most ``max_delay_ms`` for more, up
to ``max_batch``, and calls ``fn(items)`` once. Under load the queue fills while the worker is
busy, so batches form without waiting at all; when idle an item waits at most the delay.

One thread per batcher on purpose: the engines release the GIL while they run, the stage
objects (e.g. ``ClassicSwapper``'s source-crop cache) are not thread-safe, and one caller per
engine is what makes a batch worth having.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class QueueFull(Exception):
    """The batcher's queue is at ``max_queue``; the caller should answer 429."""


@dataclass(eq=False)
class Ticket:
    """One submitted item: its future and when it was queued, started and finished."""

    item: Any
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    batch_size: int = 0

    @property
    def wait_ms(self) -> float:
        return ((self.started or self.enqueued) - self.enqueued) * 1000.0

    @property
    def run_ms(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return (self.finished - self.started) * 1000.0


BatchFn = Callable[[list[Any]], Sequence[Any]]
Observer = Callable[[str, int, float], None]  # (stage, batch size, seconds)
DepthObserver = Callable[[str, int], None]     # (stage, +1 queued / -n taken)


class DynamicBatcher:
    """Group items into batches for ``fn`` (list of items -> list of results, same order).

    Args:
        name: stage name, used in thread names, logs and metrics.
        fn: runs one batch; an exception fails every item of that batch.
        max_batch: most items per call.
        max_delay_ms: longest wait for a batch to fill after its first item.
        max_queue: most items waiting; a non-blocking submit beyond it raises ``QueueFull``.
        on_batch, on_depth: metric hooks.
    """

    def __init__(self, name: str, fn: BatchFn, max_batch: int = 8, max_delay_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Observer | None = None,
                 on_depth: DepthObserver | None = None):
        if max_batch < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError(f"batcher '{name}' | max_batch {max_batch}, max_queue {max_queue}, "
                             f"max_delay_ms {max_delay_ms}; expected >= 1, >= 1, >= 0")
        self.name, self.fn = name, fn
        self.max_batch, self.max_delay = int(max_batch), max_delay_ms / 1000.0
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._on_batch, self._on_depth = on_batch, on_depth
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._loop, name=f"fusionrt-batch-{name}",
                                        daemon=True)
        self._thread.start()

    # -- submitting ------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._q.qsize()

    def submit(self, item: Any, block: bool = False, timeout: float | None = None) -> Ticket:
        """Queue ``item``; ``block=False`` raises ``QueueFull`` at once when the queue is full,
        ``block=True`` waits for room (up to ``timeout`` seconds)."""
        t = Ticket(item)
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            with self._lock:  # check-and-put under the lock: nothing slips in behind _STOP
                if self._closed:
                    raise RuntimeError(f"batcher '{self.name}' | closed; expected an open one")
                try:
                    self._q.put_nowait(t)
                    break
                except queue.Full:
                    pass
            if not block or (deadline is not None and time.perf_counter() > deadline):
                raise QueueFull(f"queue '{self.name}' | full ({self._q.maxsize} items)")
            time.sleep(0.002)
        t.enqueued = time.perf_counter()
        if self._on_depth:
            self._on_depth(self.name, 1)
        return t

    def run_sync(self, items: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Submit several items (blocking while the queue is full) and wait for all results;
        used by video jobs so their frames batch with each other and with requests."""
        tickets = [self.submit(it, block=True, timeout=timeout) for it in items]
        return [t.future.result(timeout) for t in tickets]

    async def run(self, item: Any, timeout: float) -> tuple[Any, Ticket]:
        """Submit without blocking and await the result; on timeout the item is cancelled
        (skipped if not yet started) and ``asyncio.TimeoutError`` raised."""
        t = self.submit(item)
        result = await asyncio.wait_for(asyncio.wrap_future(t.future), timeout)
        return result, t

    # -- working ---------------------------------------------------------------
    def _collect(self, first: Ticket) -> tuple[list[Ticket], bool]:
        batch, stop = [first], False
        deadline = time.perf_counter() + self.max_delay
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                t = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if t is _STOP:
                stop = True
                break
            batch.append(t)
        return batch, stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            if self._on_depth:
                self._on_depth(self.name, -len(batch))
            # a request that timed out meanwhile was cancelled: skip its work
            live = [t for t in batch if t.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _run(self, live: list[Ticket]) -> None:
        t0 = time.perf_counter()
        for t in live:
            t.started, t.batch_size = t0, len(live)
        try:
            results = list(self.fn([t.item for t in live]))
            if len(results) != len(live):
                raise RuntimeError(f"batch '{self.name}' | {len(results)} results for "
                                   f"{len(live)} items; expected one per item")
        except BaseException as e:  # noqa: BLE001 - handed to every waiting request
            log.debug("batch '%s' of %d failed: %s", self.name, len(live), e)
            t1 = time.perf_counter()
            for t in live:
                t.finished = t1
                t.future.set_exception(e)
        else:
            t1 = time.perf_counter()
            for t, r in zip(live, results):
                t.finished = t1
                t.future.set_result(r)
        self.batches += 1
        self.items += len(live)
        if self._on_batch:
            self._on_batch(self.name, len(live), t1 - t0)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking items, finish every queued one, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # under the lock, so _STOP lands after every accepted item: they all run first
            # (a full queue only delays this put: the worker keeps draining)
            self._q.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("batcher '%s' | still busy after %.0f s at close", self.name, timeout)
