"""The request/response types every LLM backend speaks."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One text-completion request. Prompts are plain text so base models and chat servers both work."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ("\n",)
    top_logprobs: int = 0
    """If > 0, return the top log-probabilities of the first generated token."""


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
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class LLMClient(ABC):
    """A backend that answers a batch of requests. Implementations batch or parallelise internally."""

    backend: str
    model_id: str
    supports_logprobs: bool = True

    @abstractmethod
    def complete(self, requests: list[Request]) -> list[Response]:
        """Answers in the order of `requests`; a failure is a Response with `error` set, not an exception."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def normalise_logprobs(entries: dict[str, float]) -> dict[str, float]:
    """Drop non-finite values that some servers return for impossible tokens."""
    return {token: lp for token, lp in entries.items() if lp is not None and math.isfinite(lp)}
