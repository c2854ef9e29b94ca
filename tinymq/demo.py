"""``python -m tinymq demo``: the seed article's word-lookup service, runnable.

Lookups arrive on the main thread. Known words are answered at once; unknown ones go
to the ``enrich`` queue, whose workers stand in for the slow LLM call and add the
word to the dictionary when it succeeds, so a later lookup of it is answered at once.
A failed call is retried with backoff; a word that fails every attempt becomes a dead
letter, listed in the summary.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from tinymq.context import Context
from tinymq.deadletter import DeadLetter
from tinymq.message import Msg
from tinymq.mq import MQ
from tinymq.retry import Retry

ATTEMPTS = 3  # calls per word before it becomes a dead letter

_Num = TypeVar("_Num", int, float)

KNOWN = ["apple", "book", "cat", "dog", "house", "river", "school", "sun", "tree", "water"]
UNKNOWN = [
    "apricity", "defenestrate", "ephemeral", "halcyon", "limerence", "mellifluous",
    "petrichor", "quixotic", "serendipity", "sonder", "susurrus", "vellichor",
]  # fmt: skip


class EnrichmentError(Exception):
    """Raised by the simulated LLM call when it fails or is cancelled."""


class FakeLLM:
    """The slow external API: answers in ``delay`` s +-1/3, fails at ``fail_rate``.

    Each outcome is drawn from the seed, the word and how often the word was asked
    before, not from thread timing, so a seed replays the same failures.
    """

    def __init__(self, delay: float, fail_rate: float, seed: int) -> None:
        self._delay, self._fail_rate, self._seed = delay, fail_rate, seed
        self._lock = threading.Lock()  # guards _asked
        self._asked: Counter[str] = Counter()

    def define(self, ctx: Context, word: str) -> None:
        """Simulate asking for a definition of ``word``; cancelling ``ctx`` cuts it short.

        Raises:
            EnrichmentError: the call failed, or ``ctx`` was cancelled first.
        """
        with self._lock:
            n = self._asked[word]
            self._asked[word] += 1
        rng = random.Random(f"{self._seed}:{word}:{n}")
        if ctx.wait(rng.uniform(self._delay * 2 / 3, self._delay * 4 / 3)):
            raise EnrichmentError("cancelled before the LLM answered")
        if rng.random() < self._fail_rate:
            raise EnrichmentError("LLM API answered 503 Service Unavailable")


class Demo:
    """The lookup service, its ``enrich`` consumer and the progress report."""

    def __init__(self, delay: float, concurrency: int, fail_rate: float, seed: int) -> None:
        self.llm = FakeLLM(delay, fail_rate, seed)
        self.mq = MQ(logging.getLogger("tinymq"))
        retry = Retry(max_attempts=ATTEMPTS, backoff=delay / 2, max_backoff=4 * delay)
        self.mq.register_queue(
            "enrich", self.enrich, concurrency, retry=retry, on_dead=self.gave_up
        )
        self.interval = delay / (2 * concurrency)  # about the pace the workers keep up with
        self._dict_lock = threading.Lock()  # guards _dictionary
        self._dictionary = {word: "built in" for word in KNOWN}  # word -> where it came from
        self._lock = threading.Lock()  # guards the counts below and the order of output
        self.published = 0
        self._t0 = time.monotonic()

    def say(self, line: str) -> None:
        """Print ``line`` after the seconds since the start; any thread may call it."""
        with self._lock:
            print(f"{time.monotonic() - self._t0:6.2f}s  {line}", flush=True)

    def lookup(self, n: int, total: int, word: str) -> None:
        """Answer ``word`` from the dictionary, or publish it for enrichment."""
        with self._dict_lock:
            source = self._dictionary.get(word)
        if source is None:
            msg_id = self.mq.publish("enrich", word)
            with self._lock:
                self.published += 1
            self.say(f"lookup {n:>3}/{total} {word!r}: unknown -> queued as message id {msg_id}")
        else:
            self.say(f"lookup {n:>3}/{total} {word!r}: known ({source})")

    def enrich(self, ctx: Context, msg: Msg) -> None:
        """The ``enrich`` consumer; it re-raises failures so that tinymq retries them."""
        word: str = msg.data
        try:
            self.llm.define(ctx, word)
        except Exception as exc:
            again = "will retry" if msg.attempt < ATTEMPTS else "giving up"
            self.say(f"    enrich #{msg.id} {word!r} attempt {msg.attempt} failed: {exc}; {again}")
            raise
        with self._dict_lock:
            self._dictionary.setdefault(word, f"learned from message id {msg.id}")
        self.say(f"    enrich #{msg.id} {word!r} done on attempt {msg.attempt}, added")

    def gave_up(self, letter: DeadLetter) -> None:
        """The ``on_dead`` hook: a word failed every attempt."""
        self.say(f"    enrich #{letter.id} {letter.data!r} is a dead letter: {letter.error}")

    def run(self, words: list[str]) -> int:
        """Look ``words`` up, drain the queue and print the summary; return the exit status."""
        ctx, status = Context(), 0
        self.mq.start(ctx)
        try:
            for n, word in enumerate(words, 1):
                self.lookup(n, len(words), word)
                time.sleep(self.interval)
        except KeyboardInterrupt:
            # Calls cut short raise too, so they count as failed and the check below holds.
            self.say("interrupted: cancelling the enrichments still running")
            ctx.cancel()
            status = 130
        self.mq.stop()  # drains, retries included: every published word is settled now
        elapsed = time.monotonic() - self._t0
        stats = self.mq.stats()["enrich"]
        dead = self.mq.dead_letters("enrich")
        print(
            f"summary: published {self.published}, consumed {stats.succeeded}, "
            f"failed calls {stats.failed}, retried {stats.retried}, dead letters {len(dead)}, "
            f"elapsed {elapsed:.2f} s"
        )
        for letter in dead:
            print(f"  dead letter #{letter.id} {letter.data!r} after {letter.attempts} attempts")
        if self.published != stats.succeeded + len(dead):
            print(
                "error: published != consumed + dead letters: a message was lost", file=sys.stderr
            )
            return 1
        return status


def lookup_stream(rng: random.Random, count: int) -> list[str]:
    """Return ``count`` lookups: known words, new unknown words and repeats of these.

    A word is repeated 10 or more lookups after its first one, when its enrichment
    may be done.
    """
    fresh = rng.sample(UNKNOWN, len(UNKNOWN))
    first_asked: dict[str, int] = {}  # unknown word -> index of its first lookup
    words: list[str] = []
    for i in range(count):
        roll = rng.random()
        ripe = [word for word, j in first_asked.items() if i - j >= 10]
        if roll < 0.3 and ripe:
            words.append(rng.choice(ripe))
        elif roll < 0.6 and fresh:
            words.append(fresh.pop())
            first_asked[words[-1]] = i
        else:
            words.append(rng.choice(KNOWN))
    return words


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's description and options to ``parser``."""
    parser.description = (
        "A word-lookup service answers known words at once and publishes unknown ones to "
        "the 'enrich' queue, whose consumers simulate a slow LLM call; ends with a summary."
    )
    parser.add_argument(
        "--lookups", type=_at_least(0, int), default=30, help="words to look up (default: 30)"
    )
    parser.add_argument(
        "--delay",
        type=_at_least(0.0, float),
        default=0.75,
        help="mean seconds of the simulated LLM call, +-1/3 (default: 0.75)",
    )
    parser.add_argument(
        "--concurrency", type=_at_least(1, int), default=4, help="consumer threads (default: 4)"
    )
    parser.add_argument(
        "--fail-rate", type=_fraction, default=0.2, help="chance a call fails (default: 0.2)"
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seeds the lookups and the outcomes (default: 7)"
    )


def main(args: argparse.Namespace) -> int:
    """Run the demo with the options ``add_arguments`` defines."""
    demo = Demo(args.delay, args.concurrency, args.fail_rate, args.seed)
    return demo.run(lookup_stream(random.Random(args.seed), args.lookups))


def _at_least(low: _Num, kind: Callable[[str], _Num]) -> Callable[[str], _Num]:
    def parse(text: str) -> _Num:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
