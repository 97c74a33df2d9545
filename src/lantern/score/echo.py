"""Reading a prompt's own log-probs (`Response.extra["prompt"]`: [token, logprob, {alternative: logprob}] per
prompt token): which echoed token covers which character of the prompt.

Backends spell echoed tokens their own way (SentencePiece `▁`, GPT-2 `Ġ`, byte pieces like `<0xE2>`, perhaps
a BOS), so tokens are aligned to the prompt text tolerantly: a token that cannot be placed gets no span and
is reported as such, never guessed.
"""
from __future__ import annotations

from lantern.llm.base import Response

LOOKAHEAD = 32
"""Characters searched past the current position to resynchronise after a token that could not be placed."""


def spelling(token: str) -> str:
    return token.replace("\u2581", " ").replace("Ġ", " ").replace("Ċ", "\n")


def token_spans(prompt: str, tokens: list[str]) -> list[tuple[int, int] | None]:
    """(start, end) character span of each echoed token in `prompt`, or None where it cannot be placed."""
    spans: list[tuple[int, int] | None] = []
    pos = 0
    for token in tokens:
        text = spelling(token)
        if not text:
            spans.append(None)
            continue
        start = pos if prompt.startswith(text, pos) else prompt.find(text, pos, pos + LOOKAHEAD + len(text))
        if start < 0:
            spans.append(None)
            continue
        spans.append((start, start + len(text)))
        pos = start + len(text)
    return spans


def covering(spans: list[tuple[int, int] | None], offset: int) -> int | None:
    """Index of the token whose span covers character `offset`."""
    for i, span in enumerate(spans):
        if span is not None and span[0] <= offset < span[1]:
            return i
    return None


def prompt_entries(response: Response) -> list | None:
    """The echoed prompt entries of an answer, or None when the backend returned none."""
    entries = response.extra.get("prompt") if response.ok else None
    return entries or None
