"""``async def`` tasks, and sending tasks from async code."""

import asyncio

from proj.celery import app
from proj.tasks import add


@app.task
async def page_size(url: str) -> int:
    await asyncio.sleep(0.1)  # stands for an HTTP request made with an async client
    return len(url) * 100


async def main() -> list[int]:
    """Send tasks and wait for their results without blocking the event loop."""
    try:
        sizes = [await page_size.adelay(url) for url in ("https://a.example", "https://bb.example")]
        total = await add.adelay(1, 2)
        return [await r.aget(timeout=10) for r in [*sizes, total]]
    finally:
        await app.aclose()  # the connections this event loop opened
