"""The default explainer: activating windows with the strongest tokens marked, optional activation values.

The prompt is written for base models as well as instruction-tuned ones: it ends with "Explanation:" so a
base model continues with the explanation, and the parser also accepts a chat model's longer answer.
`activations` is the same explainer with the activation values always shown.
"""
from __future__ import annotations

from dataclasses import replace

from lantern.explain.base import CHAT_TASK, Explainer, LatentEvidence, Window
from lantern.explain.format import activation_marks, marked_text, marked_tokens_summary
from lantern.explain.parsing import one_line_answer
from lantern.explain.settings import ExplainerConfig
from lantern.llm.base import Request
from lantern.text import NEWLINE_MARK, token_strings

__all__ = ["ExplainerConfig", "DefaultExplainer", "ActivationsExplainer", "build_prompt", "build_request",
           "parse_explanation"]

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


def _windows(examples) -> list[Window]:
    return [ex if isinstance(ex, Window) else Window.of(ex) for ex in examples]


def evidence_lines(tokenizer, examples, cfg: ExplainerConfig, latent_max: float) -> str:
    """One line per window (and its activation values when shown): the latent's own part of both prompt forms."""
    lines = []
    for number, ex in enumerate(_windows(examples), 1):
        marks = activation_marks(ex.activations, cfg.mark_threshold)
        lines.append(f"Passage {number}: {marked_text(tokenizer, ex.tokens, marks)}\n")
        if cfg.show_activations:
            pieces = token_strings(tokenizer, ex.tokens)
            scaled = [(p.strip(), round(10 * a / latent_max)) for p, a, m in zip(pieces, ex.activations, marks) if m]
            lines.append("Activations: " + ", ".join(f"{p} ({v})" for p, v in scaled) + "\n")
    return "".join(lines)


def build_prompt(tokenizer, examples, cfg: ExplainerConfig, latent_max: float) -> str:
    """`examples`: Windows or record rows (dicts with tokens and activations)."""
    return INSTRUCTIONS + DEMONSTRATIONS + evidence_lines(tokenizer, examples, cfg, latent_max) + "Explanation:"


def build_request(tokenizer, examples, cfg: ExplainerConfig, latent_max: float) -> Request:
    return Request(prompt=build_prompt(tokenizer, examples, cfg, latent_max), max_tokens=cfg.max_tokens,
                   temperature=cfg.temperature, stop=("\n", NEWLINE_MARK))


def parse_explanation(text: str) -> str | None:
    """The explanation in an answer, or None when there is none (counted as a failure, never guessed).

    Accepts a bare phrase (base models) or a longer answer whose last "Explanation:" line holds it; keeps
    the first sentence, without highlight marks."""
    return one_line_answer(text)


class DefaultExplainer(Explainer):
    """Marked activating windows; activation values too when `show_activations` is set."""

    name = "default"
    stop = ("\n", NEWLINE_MARK)
    demonstrations = DEMONSTRATIONS

    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return build_prompt(tokenizer, evidence.windows, cfg, evidence.latent_max)

    def evidence_text(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        summary = marked_tokens_summary(tokenizer, evidence.windows, cfg.mark_threshold)
        return (evidence_lines(tokenizer, evidence.windows, cfg, evidence.latent_max)
                + f"Marked tokens: {summary}\n")

    def parse_text(self, text: str) -> str | None:
        return parse_explanation(text)


class ActivationsExplainer(DefaultExplainer):
    """The default prompt with every marked token's activation on a 0-10 scale."""

    name = "activations"
    chat_task = CHAT_TASK + (" Under each passage, the marked tokens' activations are given on a 0-10 scale "
                             "(10: the strongest seen); let the strongest ones weigh most.")

    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return super().prompt(tokenizer, evidence, replace(cfg, show_activations=True))

    def evidence_text(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return super().evidence_text(tokenizer, evidence, replace(cfg, show_activations=True))
