"""Job execution: every outcome becomes a result, cancellation stays Trio cancellation."""

import pytest
import trio

import funtask_trio as ft
from funtask_trio.testing import make_run, run_task


async def test_cancelling_the_run_cancels_the_task_and_its_children():
    run = make_run()
    cleaned = []

    async def task(run: ft.Run, params: ft.Params) -> ft.Result:
        async def child() -> None:
            try:
                await trio.sleep_forever()
            finally:
                cleaned.append("child")

        run.nursery.start_soon(child)
        try:
            await run.step("working")
            run.cancel()
            await trio.sleep_forever()
        finally:
            cleaned.append("task")
        return ft.ok()

    result = await run_task(task, {}, run=run)
    assert (result.success, result.error_code, result.message) == (
        False,
        "cancelled",
        "stopped by request",
    )
    assert result.last_step == "working"
    assert sorted(cleaned) == ["child", "task"]
    assert run.steps == ("working",)


async def test_a_task_that_swallows_cancellation_and_returns_keeps_its_result():
    run = make_run()

    async def task(run: ft.Run, params: ft.Params) -> ft.Result:
        run.cancel()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            return ft.fail("cancelled", "cleaned up politely")
        return ft.ok()

    result = await run_task(task, {}, run=run)
    assert result.message == "cleaned up politely"


async def test_max_duration_is_reported_with_the_limit(autojump_clock):
    async def task(run: ft.Run, params: ft.Params) -> ft.Result:
        await trio.sleep(3600)
        return ft.ok()

    result = await run_task(task, {}, max_duration=600)
    assert result.error_code == "max_duration_exceeded"
    assert result.message == "job exceeded maximum duration (10m0s)"


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (RuntimeError("boom"), "panic", "boom"),
        (RuntimeError(), "panic", "RuntimeError"),
        (SystemExit(3), "panic", "3"),
        (KeyboardInterrupt(), "panic", "KeyboardInterrupt"),
        (ft.TaskError("c", "m"), "c", "m"),
        (
            ft.ParamError([("k", "int")]),
            "invalid_params",
            "missing or invalid parameters: k (expected int)",
        ),
        (ExceptionGroup("g", [ValueError("inner")]), "panic", "inner"),
        (ExceptionGroup("g", [ValueError("x"), ft.TaskError("c", "m")]), "c", "m"),
    ],
)
async def test_exceptions_become_results(error, code, message):
    async def task(run: ft.Run, params: ft.Params) -> ft.Result:
        raise error

    result = await run_task(task, {})
    assert (result.success, result.error_code, result.message) == (False, code, message)


async def test_outer_cancellation_propagates():
    async def task(run: ft.Run, params: ft.Params) -> ft.Result:
        await trio.sleep_forever()
        return ft.ok()

    with trio.move_on_after(0.01) as outer:
        await run_task(task, {})
    assert outer.cancelled_caught


async def test_run_nursery_exists_only_during_the_job():
    run = make_run()
    with pytest.raises(RuntimeError):
        run.nursery  # noqa: B018

    async def task(run: ft.Run, params: ft.Params) -> ft.Result:
        assert isinstance(run.nursery, trio.Nursery)
        return ft.ok()

    assert (await run_task(task, {}, run=run)).success
    with pytest.raises(RuntimeError):
        run.nursery  # noqa: B018


async def test_progress_records_counts_and_percent():
    run = make_run()
    await run.progress(1, 3, "item %d of %d", 1, 3)
    assert (run.progress_current, run.progress_total, run.percent) == (1, 3, 33)
    assert run.current_step == "item 1 of 3" and run.steps == ("item 1 of 3",)
    await run.step("literal %d")
    assert run.current_step == "literal %d"
