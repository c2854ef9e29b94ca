from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinymq.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(
    r"^summary: published (\d+), consumed (\d+), failed (\d+), elapsed [\d.]+ s$", re.MULTILINE
)


def summary_counts(stdout: str) -> tuple[int, int, int]:
    found = SUMMARY.findall(stdout)
    assert len(found) == 1, f"expected one summary line in:\n{stdout}"
    published, consumed, failed = (int(n) for n in found[0])
    return published, consumed, failed


def test_demo_counts_every_published_word_once_and_tinymq_logs_each_failure(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["demo", "--lookups", "20", "--delay", "0.01", "--fail-rate", "0.3", "--seed", "1"]
    with caplog.at_level(logging.ERROR, logger="tinymq"):
        status = main(argv)
    out = capsys.readouterr().out
    published, consumed, failed = summary_counts(out)
    assert status == 0
    assert published == consumed + failed
    assert failed > 0  # outcomes depend on the seed only, so seed 1 always fails some
    assert out.count("unknown -> queued as message id") == published
    assert out.count(" failed: ") == failed
    logged = [r for r in caplog.records if r.name == "tinymq" and r.exc_info is not None]
    assert len(logged) == failed


def test_demo_rejects_a_fail_rate_above_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["demo", "--fail-rate", "1.5"])
    assert exc_info.value.code == 2
    assert "--fail-rate: must be between 0 and 1" in capsys.readouterr().err


def test_python_m_tinymq_demo_exits_0_and_prints_the_summary() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tinymq", "demo", "--delay", "0.02"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    published, consumed, failed = summary_counts(result.stdout)
    assert published == consumed + failed > 0
    assert "Traceback" not in result.stderr
