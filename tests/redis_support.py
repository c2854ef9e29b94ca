"""Redis for the tests: one server and database per run, one key prefix per test.

TINYMQ_REDIS_URL names the server and database (default redis://127.0.0.1:6379/15).
The database is flushed once per run, before the first test that uses it, and each
test's keys (``{prefix}:*``) are deleted when it ends. Where no Redis answers, or
redis-py is not installed, the tests are skipped with the reason, unless
TINYMQ_REQUIRE_REDIS=1 (CI sets it): then they fail instead.

Test modules import the fixtures they use from here (``redis_url``, ``prefix``,
``mqs``), and ``require_redis_py()`` first, before importing tinymq.redis_streams.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

URL = os.environ.get("TINYMQ_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRED = os.environ.get("TINYMQ_REQUIRE_REDIS") == "1"
PING_TIMEOUT = 2.0  # seconds to connect and answer, or the server counts as absent


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under TINYMQ_REQUIRE_REDIS=1, saying why."""
    if REQUIRED:
        pytest.fail(f"{reason} (TINYMQ_REQUIRE_REDIS=1: Redis is required)", pytrace=False)
    pytest.skip(reason)


def require_redis_py() -> None:
    """Skip (or fail) the importing test module if redis-py is not installed."""
    try:
        import redis  # noqa: F401, PLC0415 - only probing that it is there
    except ImportError as exc:
        reason = f"redis-py is not installed (pip install 'tinymq[redis]'): {exc}"
        if REQUIRED:
            raise ImportError(f"{reason} (TINYMQ_REQUIRE_REDIS=1)") from exc
        pytest.skip(reason, allow_module_level=True)


require_redis_py()

import redis  # noqa: E402 - after the probe above, which skips without it

from tinymq import MQ  # noqa: E402


def client(url: str = URL) -> redis.Redis:
    """A plain redis-py client for checking what the tests left in Redis."""
    return redis.Redis.from_url(url, socket_connect_timeout=PING_TIMEOUT)


def answers(url: str) -> bool:
    """Does a Redis server answer PING at ``url``?"""
    db = client(url)
    try:
        return bool(db.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        db.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The tests' Redis database, flushed once per run; skips (or fails) without one."""
    db = client()
    try:
        db.ping()
        db.flushdb()
    except (redis.RedisError, OSError) as exc:
        unavailable(f"no Redis answers at {URL}: {exc}")
    finally:
        db.close()
    return URL


def delete_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    db = client(url)
    try:
        keys = list(db.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            db.delete(*keys)
    finally:
        db.close()


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def scratch_prefix(url: str) -> Iterator[str]:
    """A fresh key prefix whose keys are deleted on exit (for hypothesis examples)."""
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        delete_keys(url, prefix)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted when the test ends."""
    with scratch_prefix(redis_url) as name:
        yield name


MakeMQ = Callable[..., MQ]


@pytest.fixture
def mqs(redis_url: str, prefix: str) -> Iterator[MakeMQ]:
    """``mqs(consumer_kw..., **backend_kw)`` makes an MQ on this test's prefix.

    Every MQ made is stopped when the test ends (even when it failed), before the
    thread check, so a failing test does not also report leaked threads.
    """
    from tinymq.redis_streams import RedisBackend  # noqa: PLC0415 - after require_redis_py

    made: list[MQ] = []

    def make(logger: logging.Logger | None = None, **options: Any) -> MQ:
        options.setdefault("prefix", prefix)
        mq = MQ(logger, backend=RedisBackend(redis_url, **options))
        made.append(mq)
        return mq

    yield make
    for mq in made:
        with contextlib.suppress(Exception):
            mq.stop(timeout=10)
