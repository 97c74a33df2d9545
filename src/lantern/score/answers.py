"""Reading a yes/no verdict: the probability of "yes" from first-token log-probs, else the parsed text."""
from __future__ import annotations

import math
import re

from lantern.llm.base import Response

_YES = {"yes", "y", "true"}
_NO = {"no", "n", "false"}


def yes_probability(response: Response) -> tuple[float | None, str]:
    """(P(yes) or None if the answer cannot be read, how it was read: `logprobs` / `text` / `failed`)."""
    if not response.ok:
        return None, "failed"
    if response.first_token_logprobs:
        p_yes = p_no = 0.0
        for token, lp in response.first_token_logprobs.items():
            word = token.strip().lower()
            if word in _YES:
                p_yes += math.exp(lp)
            elif word in _NO:
                p_no += math.exp(lp)
        if p_yes + p_no > 0:
            return p_yes / (p_yes + p_no), "logprobs"
    match = re.match(r"\W*(\w+)", response.text or "")
    if match:
        word = match.group(1).lower()
        if word in _YES:
            return 1.0, "text"
        if word in _NO:
            return 0.0, "text"
    return None, "failed"
