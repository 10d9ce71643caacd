import asyncio

from agent_server.tasks import stop_tasks


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends():
    cancellations = 0

    async def stubborn() -> None:  # as a task inside asyncio.wait_for on Python 3.11 may be
        nonlocal cancellations
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations == 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # it has started
    async with asyncio.timeout(30):
        await stop_tasks([task])
    assert task.cancelled() and cancellations == 3


async def test_stopping_ended_and_failing_tasks_returns_without_raising():
    async def fails() -> None:
        raise RuntimeError("its own problem")

    failed, done = asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(0))
    await asyncio.wait({failed, done})
    await stop_tasks([failed, done])
    assert isinstance(failed.exception(), RuntimeError) and done.done()
