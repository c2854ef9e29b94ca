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
    r"^summary: published (\d+), consumed (\d+), failed calls (\d+), retried (\d+), "
    r"dead letters (\d+), elapsed [\d.]+ s$",
    re.MULTILINE,
)


def summary_counts(stdout: str) -> tuple[int, int, int, int, int]:
    found = SUMMARY.findall(stdout)
    assert len(found) == 1, f"expected one summary line in:\n{stdout}"
    published, consumed, failed, retried, dead = (int(n) for n in found[0])
    return published, consumed, failed, retried, dead


def test_demo_settles_every_published_word_once_retrying_and_dead_lettering_failures(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["demo", "--lookups", "30", "--delay", "0.01", "--fail-rate", "0.6", "--seed", "1"]
    with caplog.at_level(logging.ERROR, logger="tinymq"):
        status = main(argv)
    out = capsys.readouterr().out
    published, consumed, failed, retried, dead = summary_counts(out)
    assert status == 0
    assert published == consumed + dead
    assert failed == retried + dead
    assert retried > 0 and dead > 0  # outcomes depend on the seed only: seed 1 has both
    assert out.count("unknown -> queued as message id") == published
    assert out.count(" failed: ") == failed
    assert out.count("is a dead letter") == dead == out.count("  dead letter #")
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
    published, consumed, _, _, dead = summary_counts(result.stdout)
    assert published == consumed + dead > 0
    assert "Traceback" not in result.stderr
