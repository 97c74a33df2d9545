"""Reading answers: the probability of "yes", or of each digit, from log-probs where the backend gives them,
else from the parsed text; or a list of 0/1 verdicts; an answer that cannot be read is a failure, never a guess."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lantern.llm.base import Response

_YES = {"yes", "y", "true"}
_NO = {"no", "n", "false"}
YES_NO_FLOOR = 0.5
"""Least probability the first answer token must put on yes + no for P(yes) to be read from it: renormalising
"yes" at 1% against an absent "no" would otherwise give P(yes) = 1.0 for a model that meant neither."""


@dataclass(frozen=True)
class YesNo:
    """One yes/no answer as read: P(yes) (None: failed), how (`logprobs` / `text` / `low-mass` / `failed`) and the
    probability on yes + no among the first token's alternatives (None where the backend gave no log-probs)."""

    p_yes: float | None
    read_as: str
    mass: float | None = None


def read_yes_no(response: Response, floor: float = YES_NO_FLOOR) -> YesNo:
    """P(yes) renormalised over yes/no from log-probs where yes + no hold at least `floor` of the mass; an answer
    whose mass is below it (none at all included) fails (`low-mass`), whatever its text says; only without
    log-probs is the answer's first word read."""
    if not response.ok:
        return YesNo(None, "failed")
    mass = None
    if response.first_token_logprobs:
        p_yes = p_no = 0.0
        for token, lp in response.first_token_logprobs.items():
            word = token.strip().lower()
            if word in _YES:
                p_yes += math.exp(lp)
            elif word in _NO:
                p_no += math.exp(lp)
        mass = min(p_yes + p_no, 1.0)
        if mass > 0 and mass >= floor:
            return YesNo(p_yes / (p_yes + p_no), "logprobs", mass)
        return YesNo(None, "low-mass", mass)
    match = re.match(r"\W*(\w+)", response.text or "")
    if match:
        word = match.group(1).lower()
        if word in _YES:
            return YesNo(1.0, "text", mass)
        if word in _NO:
            return YesNo(0.0, "text", mass)
    return YesNo(None, "failed", mass)


def yes_probability(response: Response) -> tuple[float | None, str]:
    """(P(yes) or None if the answer cannot be read, how it was read): `read_yes_no` without the mass."""
    answer = read_yes_no(response)
    return answer.p_yes, answer.read_as


_DIGIT = re.compile(r"^[^\w]*(\d)[^\w]*$")
"""A token that is one digit, perhaps with spaces or brackets around it (` 5`, `5`, `[5`)."""


def digit_probabilities(alternatives: dict[str, float] | None, allowed: range) -> dict[int, float]:
    """Probability mass per allowed digit among a position's alternatives (tokens spelling the same digit are
    summed); empty when none of them is an allowed digit."""
    mass: dict[int, float] = {}
    for token, lp in (alternatives or {}).items():
        match = _DIGIT.match(token)
        if match and int(match.group(1)) in allowed:
            digit = int(match.group(1))
            mass[digit] = mass.get(digit, 0.0) + math.exp(lp)
    return mass


def expected_digit(alternatives: dict[str, float] | None, allowed: range = range(10)) -> tuple[float, float] | None:
    """(expected value over the allowed digits, their total probability), or None when no digit is among the
    alternatives. The expectation is renormalised over the digits that were seen."""
    mass = digit_probabilities(alternatives, allowed)
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(d * p for d, p in mass.items()) / total, total


def digit_choice(response: Response, allowed: range) -> tuple[dict[int, float] | None, str]:
    """(normalised probability per allowed digit, how it was read: `logprobs` / `text` / `failed`) of a
    one-digit answer."""
    if not response.ok:
        return None, "failed"
    mass = digit_probabilities(response.first_token_logprobs, allowed)
    total = sum(mass.values())
    if total > 0:
        return {d: p / total for d, p in mass.items()}, "logprobs"
    match = re.match(r"[^\w]*(\d)(?!\d)", response.text or "")
    if match and int(match.group(1)) in allowed:
        return {int(match.group(1)): 1.0}, "text"
    return None, "failed"


def verdict_list(response: Response, count: int) -> tuple[list[int | None], str | None]:
    """Read a list answer such as `1, 0, 0, 1, 1]` (the prompt ends in `[`; a leading `[` is accepted too) into one
    verdict per shown text, and what was wrong with it (None when nothing was).

    Strict: each entry is exactly `0` or `1` between commas, up to the closing `]` (or the end of the answer; one
    trailing comma is allowed). Entries are read up to the first one that is not `0` or `1`; the texts left
    without an entry count as failed, never as "no". A list with more entries than texts cannot be matched to
    them, so all of its texts fail."""
    failed: list[int | None] = [None] * count
    if not response.ok:
        return failed, "call failed"
    body = (response.text or "").strip()
    if body.startswith("["):
        body = body[1:]
    parts = [part.strip() for part in body.split("]", 1)[0].split(",")]
    if len(parts) > 1 and not parts[-1]:
        parts.pop()
    if len(parts) > count:
        return failed, f"{len(parts)} entries for {count} texts"
    values: list[int | None] = []
    for entry in parts:
        if entry not in ("0", "1"):
            break
        values.append(int(entry))
    if len(values) == count:
        return values, None
    problem = "no list" if not values else f"{len(values)} of {count} answers read"
    return values + [None] * (count - len(values)), problem
