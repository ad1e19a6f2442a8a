"""archive.inline: work runs on the event loop only when nothing else of that loop runs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from vesalius.archive.inline import LoopWork, of_running_loop


def test_work_runs_on_the_loop_only_when_allowed_and_alone() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    release = threading.Event()

    async def on_pool(function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    def where(wait: bool = False) -> str:
        if wait:
            release.wait(10)
        return threading.current_thread().name

    async def scenario() -> tuple[str, str, str, str, int]:
        work = LoopWork()
        loop_thread = threading.current_thread().name
        alone = await work.run(True, on_pool, where)
        refused = await work.run(False, on_pool, where)  # the caller said no
        slow = asyncio.ensure_future(work.run(False, on_pool, where, True))
        await asyncio.sleep(0.05)  # the slow one is now on the pool
        beside = await work.run(True, on_pool, where)  # something else is in progress
        release.set()
        await slow
        return loop_thread, alone, refused, beside, work.working

    try:
        loop_thread, alone, refused, beside, working = asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert alone == loop_thread
    assert refused != loop_thread
    assert beside != loop_thread
    assert working == 0


def test_a_failure_inline_leaves_the_count_right() -> None:
    async def scenario() -> int:
        work = of_running_loop()
        assert of_running_loop() is work  # one per loop

        def fail() -> None:
            raise ValueError("bad part")

        with pytest.raises(ValueError, match="bad part"):
            await work.run(True, None, fail)  # type: ignore[arg-type]
        return work.working

    assert asyncio.run(scenario()) == 0
