"""An asyncio service (the shape of a FastAPI or aiohttp app) handing slow work to tinymq.

Known words are answered at once; unknown ones are published with ``apublish`` and
enriched by async consumers on the same event loop: a hundred slow API calls in flight
cost a hundred tasks, not a hundred threads.

Run: python docs/examples/async_service.py
"""

from __future__ import annotations

import asyncio

from tinymq import MQ, Context, Msg

DICTIONARY = {"apple": "a round fruit"}
mq = MQ()


async def call_llm_api(word: str, seconds: float) -> str:
    """Stands for an HTTP call to a slow external API (httpx, aiohttp...)."""
    await asyncio.sleep(seconds)
    return f"definition of {word}"


@mq.consumer("enrich", concurrency=100)
async def enrich(ctx: Context, msg: Msg) -> None:
    word, seconds = msg.data
    DICTIONARY[word] = await call_llm_api(word, seconds)


async def lookup(word: str, seconds: float = 0.5) -> str:
    """The request handler: never waits for the slow call."""
    if word in DICTIONARY:
        return DICTIONARY[word]
    msg_id = await mq.apublish("enrich", (word, seconds))
    return f"{word!r} is being looked up (message {msg_id})"


async def main(seconds: float = 0.5) -> None:
    async with mq:  # astart() ... astop(), which drains
        words = ["apple", *(f"word{i}" for i in range(200))]
        answers = await asyncio.gather(*(lookup(w, seconds) for w in words))
        print(answers[0], "|", answers[1])
    print(f"{len(DICTIONARY)} words known after the drain")


if __name__ == "__main__":
    asyncio.run(main())
