"""The request/response types every LLM backend speaks, and the interface backends implement."""
from __future__ import annotations

import asyncio
import contextlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable


@dataclass(frozen=True)
class Request:
    """One text-completion request. Prompts are plain text so base models and chat servers both work."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ("\n",)
    top_logprobs: int = 0
    """If > 0, return the top log-probabilities of the first generated token."""
    seed: int | None = None
    """Sampling seed: candidates sampled from one prompt differ by seed (and so by response-cache key)."""
    prompt_logprobs: bool = False
    """Also return each prompt token's log-prob and top alternatives (needs `capabilities.prompt_logprobs`);
    they land in `Response.extra["prompt"]` as [token, logprob, {alternative: logprob}] triples."""
    messages: tuple[tuple[str, str], ...] = ()
    """The same request as chat turns, (role, content) pairs, for backends that speak to an instruction-tuned
    model through its chat template (`LLMClient.chat`); `prompt` stays the base-model form of it."""


@dataclass
class Response:
    text: str
    first_token_logprobs: dict[str, float] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """Why the call failed after retries; None on success. Failed calls are counted, never dropped."""
    cached: bool = False
    seconds: float = 0.0
    attempts: int = 1
    """Calls made to the backend for this answer (1 + retries)."""
    retry_reasons: list[str] = field(default_factory=list)
    """Why each earlier attempt failed (429, timeout, dropped connection, malformed JSON, ...)."""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can return; a scorer that needs one of these checks it and says so clearly."""

    logprobs: bool = True
    """Top log-probabilities of generated tokens."""
    prompt_logprobs: bool = False
    """Log-probabilities of the prompt's own tokens (OpenAI `echo`)."""


OnResponse = Callable[[int, Response], None]
"""Called with (index in the requests, answer) the moment each answer arrives (or is found in the cache)."""


class LLMClient(ABC):
    """A backend. `complete` runs the run's queue (llm/queue.py), which calls `acomplete` with batches of at most
    `max_batch` requests from at most min(`concurrency`, `max_concurrency`) tasks at once."""

    backend: str
    model_id: str
    capabilities: Capabilities = Capabilities()
    max_batch: int = 1
    """Requests per call: 1 for servers (they batch internally), the batch size for in-process models."""
    max_concurrency: int = 64
    """Calls in flight at once: a server's capacity; 1 for an in-process model (one forward at a time)."""
    concurrency: int = 8
    """Calls `complete` asks to keep in flight (capped by `max_concurrency`): `--llm-concurrency` for a server."""
    chat: bool = False
    """The backend talks to a chat model: it sends a request's `messages` (when it has them) instead of `prompt`."""

    @property
    def supports_logprobs(self) -> bool:
        return self.capabilities.logprobs

    @abstractmethod
    async def acomplete(self, batch: list[Request]) -> list[Response]:
        """Answers in the order of `batch`; a failure is a Response with `error` set, not an exception."""

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Per-event-loop resources (e.g. an HTTP connection pool), opened for one run of the queue."""
        yield

    def complete(self, requests: list[Request], on_response: OnResponse | None = None) -> list[Response]:
        """Answers in the order of `requests`, all through one queue, each handed to `on_response` as it arrives;
        then `check_answers` on them. The one way every client (and the response cache wrapping one) is called."""
        from lantern.llm.queue import run_requests

        responses = run_requests(self, requests, on_response)
        self.check_answers(responses)
        return responses

    def cache_identity(self) -> dict:
        """What besides `backend` and `model_id` decides an answer, for the response cache's key (empty: nothing;
        in-process clients name their weights in `model_id`)."""
        return {}

    def check_answers(self, responses: list[Response]) -> None:  # noqa: B027 - optional hook
        """Raise a LanternError when the answers show the backend is unusable (e.g. nothing listening)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class InProcessClient(LLMClient):
    """A model in this process: one call at a time (the queue hands it whole batches instead), answered on a worker
    thread so the event loop, and the cache commits on it, keep going meanwhile."""

    max_concurrency = 1

    @abstractmethod
    def complete_now(self, batch: list[Request]) -> list[Response]:
        """Answers in the order of `batch`, computed in the calling thread."""

    async def acomplete(self, batch: list[Request]) -> list[Response]:
        return await asyncio.to_thread(self.complete_now, batch)


def normalise_logprobs(entries: dict[str, float]) -> dict[str, float]:
    """Drop non-finite values that some servers return for impossible tokens."""
    return {token: lp for token, lp in entries.items() if lp is not None and math.isfinite(lp)}
