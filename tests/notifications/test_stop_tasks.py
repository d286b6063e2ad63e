"""A sender stops its relay workers by cancelling them. Python 3.11's asyncio.wait_for (inside
aiosmtplib's connect) can lose a cancellation that lands as the connection attempt ends: the worker
then waits on its queue for ever, and so did the sender (a fault test hung in CI on it)."""

from __future__ import annotations

import asyncio

from notifications.sending import stop_tasks


async def _worker_losing_its_first_cancellation(queue: asyncio.Queue[int], lost: list[int]) -> None:
    """Waits on the queue; the first cancellation is swallowed, as 3.11's wait_for may do."""
    while True:
        try:
            await queue.get()
        except asyncio.CancelledError:
            if not lost:
                lost.append(1)
                continue
            raise


def test_a_worker_that_lost_its_cancellation_is_stopped_all_the_same() -> None:
    async def scenario() -> tuple[bool, list[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        lost: list[int] = []
        worker = asyncio.create_task(_worker_losing_its_first_cancellation(queue, lost))
        await asyncio.sleep(0.01)  # waiting on the queue
        await asyncio.wait_for(stop_tasks([worker]), timeout=10)
        return worker.cancelled(), lost

    cancelled, lost = asyncio.run(scenario())
    assert lost == [1] and cancelled


def test_one_cancellation_alone_leaves_such_a_worker_waiting() -> None:
    """What stop_tasks guards against: cancel once and wait, and the worker is still there."""

    async def scenario() -> bool:
        queue: asyncio.Queue[int] = asyncio.Queue()
        worker = asyncio.create_task(_worker_losing_its_first_cancellation(queue, []))
        await asyncio.sleep(0.01)
        worker.cancel()
        done, _ = await asyncio.wait([worker], timeout=1.0)
        worker.cancel()  # clean up
        await asyncio.gather(worker, return_exceptions=True)
        return bool(done)

    assert asyncio.run(scenario()) is False
