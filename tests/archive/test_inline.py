"""archive.inline: work runs on the event loop only when nothing else of that loop runs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from vesalius.archive.inline import LoopWork, Steps, await_steps, of_running_loop, run_steps


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


def _steps(log: list[str]) -> Steps[str]:
    """Two waiting steps; the first one's result is used, the second's failure is handled."""
    try:
        first = yield lambda: threading.current_thread().name
        log.append(f"first ran on {first}")
        try:
            yield lambda: 1 / 0
        except ZeroDivisionError:
            log.append("second failed where it was yielded")
        return "done"
    finally:
        log.append("cleaned up")


def test_steps_run_in_line_get_each_result_and_each_failure_where_they_yielded() -> None:
    log: list[str] = []
    assert run_steps(_steps(log)) == "done"
    here = threading.current_thread().name
    assert log == [f"first ran on {here}", "second failed where it was yielded", "cleaned up"]


def test_awaited_steps_wait_on_a_thread_while_the_loop_serves_others() -> None:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waits")
    log: list[str] = []

    async def offload(step: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, step)

    try:
        assert asyncio.run(await_steps(_steps(log), offload)) == "done"
    finally:
        pool.shutdown()
    assert log[0].startswith("first ran on waits")
    assert log[1:] == ["second failed where it was yielded", "cleaned up"]


def test_a_cancelled_store_cleans_up_only_after_its_step_is_done() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    started, release = threading.Event(), threading.Event()
    log: list[str] = []

    def flush() -> None:
        started.set()
        release.wait(10)
        log.append("flushed")

    def steps() -> Steps[None]:
        try:
            yield flush
        finally:
            log.append("cleaned up")

    async def offload(step: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, step)

    async def scenario() -> None:
        task = asyncio.ensure_future(await_steps(steps(), offload))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        await asyncio.sleep(0.05)
        assert log == []  # the flush still runs: its files must stay
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert log == ["flushed", "cleaned up"]


def test_split_work_runs_on_the_loop_beside_split_work_that_waits_not_beside_the_pool() -> None:
    pool = ThreadPoolExecutor(max_workers=3)
    release = threading.Event()

    async def offload(function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    def where(wait: bool) -> Steps[str]:
        here = threading.current_thread().name
        if wait:
            yield lambda: release.wait(10)
        return here

    async def scenario() -> tuple[str, str, str]:
        work = LoopWork()
        waiting = asyncio.ensure_future(work.run_split(True, offload, where, True))
        await asyncio.sleep(0.05)  # its step waits on a thread; the loop is free
        beside_a_wait = await work.run_split(True, offload, where, False)
        on_pool = asyncio.ensure_future(work.run(False, offload, release.wait, 10))
        await asyncio.sleep(0.05)
        beside_the_pool = await work.run_split(True, offload, where, False)
        release.set()
        await asyncio.gather(waiting, on_pool)
        assert work.working == 0
        return beside_a_wait, beside_the_pool, threading.current_thread().name

    try:
        beside_a_wait, beside_the_pool, loop_thread = asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert beside_a_wait == loop_thread
    assert beside_the_pool != loop_thread


def test_steps_handed_over_in_one_turn_run_in_groups_and_each_gets_its_own_outcome() -> None:
    """TurnOffload: the steps of one turn of the loop run on threads, up to `group` after
    one another on each; each caller gets its own result or its own exception."""
    from vesalius.archive.inline import TurnOffload

    pool = ThreadPoolExecutor(max_workers=4)
    offload = TurnOffload(pool, group=4)
    ran: list[tuple[int, str]] = []

    def step(number: int) -> Any:
        def run() -> int:
            ran.append((number, threading.current_thread().name))
            if number == 2:
                raise ValueError("step 2 fails")
            return number * 10

        return run

    async def scenario() -> list[Any]:
        loop_thread = threading.current_thread().name
        futures = [offload(step(n)) for n in range(6)]  # all in one turn
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(name != loop_thread for _, name in ran)
        later = await offload(step(7))  # a later turn: a group of its own
        return [*results, later]

    try:
        results = asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert results[:2] == [0, 10] and results[3:] == [30, 40, 50, 70]
    assert isinstance(results[2], ValueError)
    threads = dict(ran)
    # Steps 0-3 ran one after the other on one thread, 4-5 on one thread too.
    assert [n for n, _ in ran if n < 4] == [0, 1, 2, 3]
    assert len({threads[n] for n in range(4)}) == 1
    assert len({threads[4], threads[5]}) == 1
