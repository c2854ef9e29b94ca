"""A threaded (sync) service whose slow work runs on async consumers.

The request handlers are plain functions on threads (Flask, Django, a
ThreadPoolExecutor); ``publish`` is safe from any of them. The consumers are async, so
``start()`` runs them on an event loop thread that the MQ owns and ``stop()`` ends.

Run: python docs/examples/sync_service.py
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tinymq import MQ, Context, Msg

lock = threading.Lock()  # guards DICTIONARY: handlers and the loop thread share it
DICTIONARY: dict[str, str] = {}
mq = MQ()


@mq.consumer("enrich", concurrency=50)
async def enrich(ctx: Context, msg: Msg) -> None:
    word, seconds = msg.data
    if await ctx.wait_async(seconds):  # stands for an awaited HTTP call; honours cancel
        return
    with lock:
        DICTIONARY[word] = f"definition of {word}"


def handle_request(word: str, seconds: float) -> str:
    """A sync request handler: answers at once, publishes the slow part."""
    with lock:
        if word in DICTIONARY:
            return DICTIONARY[word]
    return f"queued as message {mq.publish('enrich', (word, seconds))}"


def main(seconds: float = 0.5) -> None:
    mq.start()
    with ThreadPoolExecutor(8) as server:
        answers = list(server.map(handle_request, [f"w{i}" for i in range(100)], [seconds] * 100))
    print(answers[0])
    mq.stop()  # drains: every queued word is enriched before this returns
    print(f"{len(DICTIONARY)} words known after the drain")


if __name__ == "__main__":
    main()
