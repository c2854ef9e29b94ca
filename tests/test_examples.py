"""The examples in docs/examples run and drain."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("error")
def test_async_service_answers_at_once_and_enriches_every_word(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("async_service")
    asyncio.run(example.main(seconds=0.01))
    out = capsys.readouterr().out
    assert "a round fruit | 'word0' is being looked up (message 0)" in out
    assert "201 words known after the drain" in out


def test_sync_service_with_async_consumers_drains_on_stop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("sync_service")
    example.main(seconds=0.01)
    assert "100 words known after the drain" in capsys.readouterr().out
