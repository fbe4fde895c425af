"""The README's examples run as written."""

from __future__ import annotations

import re
import textwrap
import types
from functools import partial
from pathlib import Path

import trio

import funtask_trio as ft
from funtask_trio.testing import running_server

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks(text: str = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_python_block_compiles():
    for document in ["README.md", "docs/tools.md"]:
        blocks = python_blocks((ROOT / document).read_text())
        assert len(blocks) >= 3, document
        for block in blocks:
            compile(textwrap.dedent(block), document, "exec")


async def test_the_writing_tasks_example_serves_greet_and_count_down(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNTASK_AUTH_TOKEN", "readme-token")
    monkeypatch.setenv("FUNTASK_DEAD_LETTER_DIR", str(tmp_path / "dead-letters"))
    example = next(block for block in python_blocks() if "@server.task" in block)
    module = types.ModuleType("readme_example")
    exec(compile(example, "README.md", "exec"), module.__dict__)
    server: ft.Server = module.server
    async with running_server(server) as running, running.client() as client:
        greet = await client.post("/run/greet", json={"params": {"name": "World"}})
        assert greet.json()["message"] == "Hello, World!"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(client.post, "/run/count-down", json={"params": {"start": 5}})
            )
            with trio.fail_after(5):
                while True:
                    health = (await client.get("/health")).json()
                    job = health["tasks"]["count-down"].get("currentJob", {})
                    if job.get("progress"):
                        break
                    await trio.sleep(0.01)
            assert job["currentStep"] == "T-5"
            assert job["progress"] == {"current": 1, "total": 5, "percent": 20}
            await client.post("/stop/count-down")


pytest_plugins = ["pytester"]


def test_the_readme_test_examples_pass(pytester, monkeypatch):
    blocks = [block for block in python_blocks() if "async def test_" in block]
    assert len(blocks) == 2
    for index, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_readme_{index}": block})
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4)
