"""Where a store runs: on the event loop that received it, or on a worker thread.

Handing a store to a pool thread and back costs two thread wakes, and the GIL then passes
between that thread and the loop's at every system call either makes: about 30 context
switches and 0.5-0.9 ms of CPU per stored 512 KB instance, as much as indexing it. Work that
overlaps nothing else of the loop pays that for nothing, so it runs on the loop itself; the
kernel goes on receiving meanwhile, and the other worker processes use the other cores.

C-STORE and STOW-RS both ask :class:`LoopWork`; each decides *whether* a piece of work may
run inline (its size, whether it would hold other clients), this module *when* it may.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

INLINE_MAX = 8 * 1024 * 1024
"""Bytes: a larger instance is stored on the pool (its fsync alone would hold the loop for
tens of milliseconds)."""


class LoopWork:
    """Counts the work of one event loop in progress, inline or on the pool."""

    def __init__(self) -> None:
        self.working = 0

    async def run(
        self,
        inline: bool,
        on_pool: Callable[..., Awaitable[T]],
        function: Callable[..., T],
        *args: Any,
    ) -> T:
        """Run *function* on the loop when *inline* allows it and nothing else of this loop
        is in progress, else through *on_pool* (which runs it on a worker thread)."""
        inline = inline and self.working == 0
        self.working += 1
        try:
            if inline:
                return function(*args)
            return await on_pool(function, *args)
        finally:
            self.working -= 1


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWork] = (
    weakref.WeakKeyDictionary()
)


def of_running_loop() -> LoopWork:
    """The :class:`LoopWork` of the running event loop (one per loop, made on first use)."""
    loop = asyncio.get_running_loop()
    work = _PER_LOOP.get(loop)
    if work is None:
        work = _PER_LOOP[loop] = LoopWork()
    return work
