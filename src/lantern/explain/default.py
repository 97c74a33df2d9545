"""The default explainer: activating windows with the strongest tokens marked, optional activation values.

The prompt is written for base models as well as instruction-tuned ones: it ends with "Explanation:" so a
base model continues with the explanation, and the parser also accepts a chat model's longer answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lantern.explain.format import activation_marks, marked_text
from lantern.llm.base import Request
from lantern.text import NEWLINE_MARK, token_strings

INSTRUCTIONS = (
    "We are reading the internals of a language model. Each feature below is active on some text passages; "
    "the tokens where it is strongest are marked like <<this>>. For each feature, one short phrase says what "
    "the marked tokens have in common: the words, the topic or the grammatical pattern.\n\n"
)
# Two worked examples, identical for every latent (so a server's prefix cache hits), that show a base model
# the format and the level of detail wanted.
DEMONSTRATIONS = (
    "Feature A\n"
    "Passage 1: The ticket cost <<$>>20 and the hotel another <<$>>95 a night.\n"
    "Passage 2: She sold the bike for <<\u00a3>>40 to a neighbour.\n"
    "Passage 3: Prices start at <<\u20ac>>15 per person.\n"
    "Explanation: currency symbols written before an amount of money\n\n"
    "Feature B\n"
    "Passage 1: He walked <<into>> the kitchen and sat down.\n"
    "Passage 2: They moved <<into>> a larger house last year.\n"
    "Passage 3: Pour the batter <<into>> the pan.\n"
    "Explanation: the preposition \"into\" after a verb of motion\n\n"
    "Feature C\n"
)


@dataclass(frozen=True)
class ExplainerConfig:
    mark_threshold: float = 0.3
    """Mark tokens above this fraction of the window's maximum activation."""
    show_activations: bool = False
    """Also list the marked tokens with their activation on a 0-10 scale."""
    max_tokens: int = 48
    temperature: float = 0.0


def build_prompt(tokenizer, examples: list[dict], cfg: ExplainerConfig, latent_max: float) -> str:
    lines = [INSTRUCTIONS, DEMONSTRATIONS]
    for number, ex in enumerate(examples, 1):
        marks = activation_marks(ex["activations"], cfg.mark_threshold)
        lines.append(f"Passage {number}: {marked_text(tokenizer, ex['tokens'], marks)}\n")
        if cfg.show_activations:
            pieces = token_strings(tokenizer, ex["tokens"])
            scaled = [(p.strip(), round(10 * a / latent_max)) for p, a, m in zip(pieces, ex["activations"], marks) if m]
            lines.append("Activations: " + ", ".join(f"{p} ({v})" for p, v in scaled) + "\n")
    lines.append("Explanation:")
    return "".join(lines)


def build_request(tokenizer, examples: list[dict], cfg: ExplainerConfig, latent_max: float) -> Request:
    return Request(prompt=build_prompt(tokenizer, examples, cfg, latent_max), max_tokens=cfg.max_tokens,
                   temperature=cfg.temperature, stop=("\n", NEWLINE_MARK))


_LABEL = re.compile(r"^[\s*_#>`-]*explanation[\s*_`]*[:\-]\s*", re.IGNORECASE | re.MULTILINE)


def parse_explanation(text: str) -> str | None:
    """The explanation in an answer, or None when there is none (counted as a failure, never guessed).

    Accepts a bare phrase (base models) or a longer answer whose last "Explanation:" line holds it; keeps
    the first sentence, without highlight marks."""
    text = text.replace(NEWLINE_MARK, "\n")
    labelled = _LABEL.split(text)
    candidate = labelled[-1] if len(labelled) > 1 else text
    for line in candidate.splitlines():
        line = line.replace("<<", "").replace(">>", "")
        line = re.split(r"\.\s+(?=[A-Z])", line.strip(), maxsplit=1)[0]
        line = re.sub(r"\s+", " ", line.strip().strip("`*").strip()).rstrip(".").strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        if len(line) >= 3 and re.search(r"[A-Za-z]", line):
            return line[:300]
    return None
