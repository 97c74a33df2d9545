"""One bounded async queue for a stage's prompts: every prompt of every latent goes through it, so a server is
kept busy up to its capacity, and every answer is handed back (and stored) as soon as it arrives.

Workers take up to `client.max_batch` requests at a time (an in-process model batches them in one forward
pass; a server gets one request per call and `client.concurrency` calls in flight). A finished answer is passed
to `on_response` immediately, which is where the response cache commits it: a run killed mid-stage keeps every
answer it had received. Clients reach it through `LLMClient.complete`.
"""
from __future__ import annotations

import asyncio
import threading

from lantern.errors import LanternError
from lantern.llm.base import LLMClient, OnResponse, Request, Response


def _batching_order(client: LLMClient, requests: list[Request]) -> list[int]:
    """For in-process batching, neighbours in the queue should share sampling settings and length (little
    padding); servers get the requests in the caller's order."""
    order = list(range(len(requests)))
    if client.max_batch <= 1:
        return order
    return sorted(order, key=lambda i: (requests[i].max_tokens, requests[i].temperature, requests[i].stop,
                                       requests[i].top_logprobs, len(requests[i].prompt)))


async def _run(client: LLMClient, requests: list[Request], on_response: OnResponse | None) -> dict[int, Response]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in _batching_order(client, requests):
        queue.put_nowait(i)
    answers: dict[int, Response] = {}

    async def worker() -> None:
        while not queue.empty():
            batch = [queue.get_nowait()]
            while len(batch) < client.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                responses = await client.acomplete([requests[i] for i in batch])
            except LanternError:
                raise  # a configuration error (e.g. a capability the backend lacks): stop the run, say why
            except Exception as err:  # a backend bug must not lose the other answers: record it per request
                responses = [Response(text="", error=f"{type(err).__name__}: {err}") for _ in batch]
            for i, response in zip(batch, responses):
                answers[i] = response
                if on_response is not None:
                    on_response(i, response)

    workers = max(1, min(client.concurrency, client.max_concurrency, len(requests)))
    async with client.session():
        await asyncio.gather(*(worker() for _ in range(workers)))
    return answers


def run_requests(client: LLMClient, requests: list[Request], on_response: OnResponse | None = None
                 ) -> list[Response]:
    """Answer `requests` through the queue, in their order (from a plain thread or from inside an event loop)."""
    if not requests:
        return []
    coroutine = _run(client, requests, on_response)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        answers = asyncio.run(coroutine)
    else:  # called from inside an event loop (a notebook): run the queue on a thread of its own
        result: dict = {}
        thread = threading.Thread(target=lambda: result.setdefault("a", asyncio.run(coroutine)))
        thread.start()
        thread.join()
        answers = result["a"]
    return [answers.get(i) for i in range(len(requests))]  # type: ignore[misc]
