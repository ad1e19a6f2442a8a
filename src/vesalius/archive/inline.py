"""Where a store runs: on the event loop that received it, or on a worker thread.

Handing a store to a pool thread and back costs two thread wakes, and the GIL then passes
between that thread and the loop's at every system call either makes: about 30 context
switches and 0.5-0.9 ms of CPU per stored 512 KB instance, as much as indexing it. Work that
overlaps nothing else of the loop pays that for nothing, so it runs on the loop itself; the
kernel goes on receiving meanwhile, and the other worker processes use the other cores.

A store is split (:data:`Steps`): its CPU work runs where it is called, and the steps that
wait (the disk flush that makes a file durable) or that are heavy (re-encoding an image) are
handed to the caller, which runs them in line (:func:`run_steps`) or on a thread while its
loop serves other clients (:func:`await_steps`). Holding the loop for the flush left a
worker idle while its other associations' data waited: with 4 associations on 2 workers the
machine was 78% busy, 88% with the flush on a thread, and the rate rose by 12%.

The rows of a store are written by a :class:`Commit` step, run where the steps run (its
commit then groups with those of other threads) or, for stores that ask for it, gathered
with the commits that the other stores of the loop reach in the same turn of it
(:class:`CommitBatch`, one per loop): small STOW-RS parts, which used to go to the pool only
to share a commit. Their flushes go to threads a few at a time (:class:`TurnOffload`).

C-STORE, STOW-RS and C-FIND ask :class:`LoopWork`; each decides *whether* a piece of work may
run inline (its size, whether it would hold other clients), this module *when* it may.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Executor
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")


class Background:
    """A waiting step to start now and wait for later, while the steps go on with their CPU
    work: yielding it gives back a :class:`Started` at once, and yielding that waits for the
    step and gives back its result (or raises what it raised). Steps that start one wait for
    it on every path, so that nothing they clean up afterwards is still in use."""

    __slots__ = ("step",)

    def __init__(self, step: Callable[[], Any]) -> None:
        self.step = step


class Started:
    """A :class:`Background` step under way: an asyncio future on a loop, or (in line) the
    outcome it already has."""

    __slots__ = ("_error", "_result", "future")

    def __init__(
        self,
        future: asyncio.Future[Any] | None = None,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        self.future = future
        self._result = result
        self._error = error

    @property
    def succeeded(self) -> bool:
        """Whether the step has ended without raising."""
        if self.future is not None:
            return (
                self.future.done()
                and not self.future.cancelled()
                and (self.future.exception() is None)
            )
        return self._error is None

    def outcome(self) -> Any:
        """The result of a step run in line (or raise what it raised)."""
        if self._error is not None:
            raise self._error
        return self._result


class Commit:
    """A row-writing step for the archive's group commit: ``rows.run(step)``. Run where the
    steps run (its commit then groups with those of other threads), or handed to a
    :class:`CommitBatch`, which commits the steps of several stores of one loop together."""

    __slots__ = ("rows", "step")

    def __init__(self, rows: Any, step: Callable[[Any], Any]) -> None:
        self.rows = rows
        self.step = step

    def __call__(self) -> Any:
        return self.rows.run(self.step)


_Handed: TypeAlias = tuple[Any, "asyncio.Future[Any]"]  # an item, and the future of its outcome


class _PerTurn:
    """Items handed over during one turn of a loop, dealt with together at its next turn
    (:meth:`_turn`); each caller gets a future of its own item's outcome."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.AbstractEventLoop, list[_Handed]] = {}

    def _gather(self, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._next_turn, loop)
        pending.append((item, future))
        return future

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._turn(loop, self._pending.pop(loop))

    def _turn(self, loop: asyncio.AbstractEventLoop, pending: list[_Handed]) -> None:
        raise NotImplementedError


class CommitBatch(_PerTurn):
    """The :class:`Commit` steps that the stores of one event loop reach in one turn of it,
    committed together at the next turn, in one transaction (each failing alone)."""

    def submit(self, commit: Commit) -> asyncio.Future[Any]:
        return self._gather(commit)

    def _turn(self, loop: asyncio.AbstractEventLoop, pending: list[_Handed]) -> None:
        by_rows: dict[int, list[_Handed]] = {}
        for item in pending:
            by_rows.setdefault(id(item[0].rows), []).append(item)
        for items in by_rows.values():
            try:
                outcomes = items[0][0].rows.run_many([commit.step for commit, _ in items])
            except Exception as exc:  # handed to each store that waits for it
                outcomes = [(False, exc)] * len(items)
            _settle([future for _, future in items], outcomes)


class TurnOffload(_PerTurn):
    """An offload for :func:`await_steps` that runs the steps handed to it in one turn of a
    loop on *executor* threads, up to *group* of them one after another on each thread, and
    wakes the loop once per group rather than once per step.

    Each hand-off to a thread and back costs a submit, a wake of the thread, a wake of the
    loop and the GIL passing between them; for the flush of a small file that was more than
    the fsync itself.
    """

    def __init__(self, executor: Executor, group: int) -> None:
        super().__init__()
        self.executor = executor
        self.group = group

    def __call__(self, function: Callable[[], Any]) -> asyncio.Future[Any]:
        return self._gather(function)

    def _turn(self, loop: asyncio.AbstractEventLoop, pending: list[_Handed]) -> None:
        for start in range(0, len(pending), self.group):
            self.executor.submit(_run_group, loop, pending[start : start + self.group])


def _run_group(loop: asyncio.AbstractEventLoop, group: list[_Handed]) -> None:
    outcomes: list[tuple[bool, Any]] = []
    for function, _ in group:
        try:
            outcomes.append((True, function()))
        except BaseException as exc:  # handed to the step's caller, as a thread's future would
            outcomes.append((False, exc))
    loop.call_soon_threadsafe(_settle, [future for _, future in group], outcomes)


def _settle(futures: list[asyncio.Future[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    """Give each future its outcome, a result or an exception (unless it was cancelled)."""
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


Step: TypeAlias = Callable[[], Any] | Background | Started | Commit
Steps: TypeAlias = Generator[Step, Any, T]
"""Work that yields its waiting steps to its caller, gets back what each returned (or has
its exception raised where it yielded), and returns its result."""


def run_steps(steps: Steps[T]) -> T:
    """Run *steps* here, each waiting step in line (a :class:`Background` one at once)."""
    try:
        step = next(steps)
        while True:
            try:
                if isinstance(step, Started):
                    result = step.outcome()
                elif isinstance(step, Background):
                    try:
                        result = Started(result=step.step())
                    except Exception as exc:
                        result = Started(error=exc)
                else:
                    result = step()
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def await_steps(
    steps: Steps[T],
    offload: Callable[[Callable[[], Any]], Awaitable[Any]],
    commits: CommitBatch | None = None,
) -> T:
    """Run *steps* on the running loop, each waiting step through *offload* (a thread); a
    :class:`Background` one is started there and the steps go on meanwhile. It starts at once
    when *offload* submits its work when called (``Services._run``); a coroutine starts only
    when the loop next turns, after the steps' CPU work.

    A cancelled caller still waits for the step in progress before the steps clean up: the
    thread may be using the files they would remove.
    """
    try:
        step = next(steps)
        while True:
            try:
                if isinstance(step, Started):
                    assert step.future is not None
                    result = await _to_the_end(step.future)
                elif isinstance(step, Background):
                    result = Started(asyncio.ensure_future(offload(step.step)))
                elif isinstance(step, Commit):
                    if commits is None:
                        result = step()
                    else:
                        result = await _to_the_end(commits.submit(step))
                else:
                    result = await _to_the_end(asyncio.ensure_future(offload(step)))
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _to_the_end(future: asyncio.Future[Any]) -> Any:
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


class LoopWork:
    """Counts the work of one event loop in progress, inline or on the pool (split work
    only while on the pool: see :meth:`run_split`)."""

    def __init__(self) -> None:
        self.working = 0
        self.commits = CommitBatch()

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

    async def run_split(
        self,
        inline: bool,
        offload: Callable[..., Awaitable[T]],
        steps: Callable[..., Steps[T]],
        *args: Any,
    ) -> T:
        """Run the :data:`Steps` that ``steps(*args)`` makes: on the loop, each waiting step
        through *offload*, when *inline* allows it and no work of this loop is on the pool;
        else all of it through *offload*.

        Work split this way is not counted while it waits: the loop is free meanwhile, and
        the next piece of work may run on it as well.
        """
        if inline and self.working == 0:
            return await await_steps(steps(*args), offload)
        self.working += 1
        try:
            return await offload(_run_made, steps, args)
        finally:
            self.working -= 1


def _run_made(steps: Callable[..., Steps[T]], args: tuple[Any, ...]) -> T:
    return run_steps(steps(*args))


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
