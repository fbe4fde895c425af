"""How to test your own tasks: the counter example's tests.

Two levels, both under pytest-trio (``trio_mode = true`` in the pytest configuration):

- Call the task functions directly with `make_run` / `run_task`: fast, no
  HTTP, every step recorded, cancellation under the test's control.
- Serve the real `Server` with the plugin's `funtask_client` fixture (a real
  hypercorn on a loopback port) and `callback_receiver` for async jobs.
"""

import pytest
import trio

import funtask_trio as ft
from examples import counter
from funtask_trio.testing import make_params, make_run, run_task

# -- the task functions, directly ------------------------------------------------------


async def test_greet_says_hello() -> None:
    result = await counter.greet(make_run(), make_params({"name": "Ada"}))
    assert result == ft.ok("Hello, Ada!").with_data(name="Ada")


async def test_countdown_reports_every_step() -> None:
    run = make_run()
    result = await run_task(counter.countdown, {"start": 3, "interval": 0}, run=run)
    assert result.success and result.data == {"start": 3}
    assert run.steps == ("T-3", "T-2", "T-1")


async def test_countdown_stops_when_cancelled() -> None:
    run = make_run()
    result = await run_task(
        counter.countdown, {"start": 100, "interval": 0}, run=run, cancel_at_step="T-98"
    )
    assert (result.error_code, result.message) == ("cancelled", "stopped by request")
    assert run.steps[-1] == "T-98"


async def test_countdown_needs_a_whole_start() -> None:
    result = await run_task(counter.countdown, {"start": 2.5})
    assert result.error_code == "invalid_params"


async def test_fail_demo_names_its_last_step() -> None:
    result = await run_task(counter.fail_demo)
    assert (result.error_code, result.last_step) == ("db_error", "connecting to the database")


# -- the server, over real HTTP --------------------------------------------------------


@pytest.fixture
def funtask_server() -> ft.Server:
    """The server that `funtask_client` serves (it gets a token and a temporary dead-letter dir)."""
    return counter.server


async def test_greet_over_http(funtask_client) -> None:
    response = await funtask_client.post("/run/greet", json={"params": {"name": "HTTP"}})
    assert response.status_code == 200
    assert response.json()["message"] == "Hello, HTTP!"


async def test_stop_cancels_a_running_countdown(funtask_client) -> None:
    async with trio.open_nursery() as nursery:
        answers = []

        async def run_countdown() -> None:
            answers.append(
                await funtask_client.post("/run/countdown", json={"params": {"start": 1000}})
            )

        nursery.start_soon(run_countdown)
        with trio.fail_after(5):
            while (await funtask_client.post("/stop/countdown")).json().get("jobId") is None:
                await trio.sleep(0.01)
    assert answers[0].json()["error"]["code"] == "cancelled"


async def test_countdown_result_goes_to_the_callback(funtask_client, callback_receiver) -> None:
    callback_receiver.fail_next(1, status=503, retry_after=0)  # the first delivery fails
    response = await funtask_client.post(
        "/run/countdown",
        json={
            "jobId": "cb-1",
            "callbackUrl": callback_receiver.url,
            "params": {"start": 2, "interval": 0},
        },
    )
    assert response.status_code == 202
    delivered = await callback_receiver.wait_for("cb-1")
    assert delivered.json["data"] == {"start": 2}
    assert len(callback_receiver.callbacks_for("cb-1")) == 2
