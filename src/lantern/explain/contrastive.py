"""Contrastive: the activating windows beside windows where the latent is silent, so the explanation must
say what separates them (records' explain negatives: `RecordConfig.n_explain_negatives > 0`; similar-looking
windows where the window index exists). A latent without negatives is still explained, from its activating
windows alone, and its stored evidence says that no contrast was shown."""
from __future__ import annotations

from lantern.explain.base import Explainer, LatentEvidence
from lantern.explain.format import marked_tokens_summary, passages, plain_text
from lantern.explain.parsing import one_line_answer, unless_copied
from lantern.explain.settings import ExplainerConfig
from lantern.text import NEWLINE_MARK

DEFAULT_NEGATIVES = 10
"""Explain negatives per latent that a new run explained contrastively asks its records for."""

INSTRUCTIONS = (
    "We study features inside a language model. For each feature we list passages where it is active, with "
    "its strongest tokens marked like <<this>>, and then, when we have them, passages where the feature is NOT "
    "active at all, often close in wording or topic. One short phrase says what the marked tokens share that "
    "the inactive passages lack.\n\n"
)
DEMONSTRATIONS = (
    "Feature A\n"
    "Active 1: The river <<Thames>> flows through Oxford.\n"
    "Active 2: We walked along the <<Danube>> at dusk.\n"
    "NOT active 1: The road runs past the old mill.\n"
    "NOT active 2: We walked along the beach at dusk.\n"
    "Explanation: names of rivers, not other places\n\n"
    "Feature B\n"
    "Active 1: She <<had>> already eaten when we arrived.\n"
    "Active 2: They <<had>> never seen snow before.\n"
    "NOT active 1: She has a dog and two cats.\n"
    "NOT active 2: They had a long talk that night.\n"
    "Explanation: \"had\" as the helper of a past perfect verb, not \"had\" meaning owned or held\n\n"
    "Feature C\n"
)


CHAT_TASK = (
    "You name what a feature inside a language model responds to. You are shown passages where it is active, "
    "with the tokens where it fires most strongly marked like <<this>>, the marked tokens listed with how often "
    "each is marked, and then passages where it is NOT active at all, often similar in wording or topic. Reply "
    "with one short phrase, at most 12 words, that says what the marked tokens share and the inactive passages "
    "lack. Be concrete (name a repeated word in quotes). Write only the phrase."
)


def _silent(tokenizer, evidence: LatentEvidence) -> str:
    return "".join(f"NOT active {n}: {plain_text(tokenizer, w.tokens)}\n" for n, w in enumerate(evidence.negatives, 1))


class ContrastiveExplainer(Explainer):
    name = "contrastive"
    stop = ("\n", NEWLINE_MARK)
    demonstrations = DEMONSTRATIONS
    chat_task = CHAT_TASK

    def evidence_text(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        silent = _silent(tokenizer, evidence)
        summary = marked_tokens_summary(tokenizer, evidence.windows, cfg.mark_threshold)
        return (passages(tokenizer, evidence.windows, cfg.mark_threshold, "Active")
                + f"Marked tokens: {summary}\n" + silent)

    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return (INSTRUCTIONS + DEMONSTRATIONS + passages(tokenizer, evidence.windows, cfg.mark_threshold, "Active")
                + _silent(tokenizer, evidence) + "Explanation:")

    def parse_text(self, text: str) -> str | None:
        """A one-phrase answer; a copied "Active n:" / "NOT active n:" line is not one."""
        return unless_copied(one_line_answer(text), ("Active ", "NOT active "))

    def describe(self, evidence: LatentEvidence) -> dict:
        shown = {"windows": len(evidence.windows), "negatives_shown": len(evidence.negatives)}
        if not evidence.negatives:
            shown["note"] = "no explain negatives in the records: explained without contrast"
        return shown
