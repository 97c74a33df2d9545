"""Input and output together: the marked activating windows and the tokens the latent promotes, in one
prompt, so the explanation can name what the latent reads and, where the two agree, what it leads to."""
from __future__ import annotations

from lantern.explain.base import Explainer, LatentEvidence
from lantern.explain.format import passages
from lantern.explain.output import LABELS, describe_output, output_lines
from lantern.explain.parsing import one_line_answer, unless_copied
from lantern.explain.settings import ExplainerConfig
from lantern.text import NEWLINE_MARK

INSTRUCTIONS = (
    "We study features inside a language model from both sides. For each feature we show passages where it is "
    "active, with its strongest tokens marked like <<this>>, and then the tokens it pushes the model to write "
    "next. \"Direct\": tokens its direction favours through the model's output layer. \"Steered\": tokens that "
    "became more likely (log-probability change in brackets) when the feature was added to the model. One "
    "short phrase says what the feature responds to and, where the two sides agree, what it leads to.\n\n"
)
DEMONSTRATIONS = (
    "Feature A\n"
    "Passage 1: Tickets cost <<$>>12 at the door.\n"
    "Passage 2: He owed her <<$>>300 by the end of May.\n"
    "Passage 3: A coffee is about <<\u00a3>>3 here.\n"
    "Direct: \"1\", \"2\", \"5\", \"3\", \"10\"\n"
    "Steered: \"1\" (+2.6), \"2\" (+2.2), \"5\" (+1.9), \"20\" (+1.4)\n"
    "Explanation: currency symbols, which the model follows with a number\n\n"
    "Feature B\n"
    "Passage 1: The train left <<according>> to the timetable.\n"
    "Passage 2: Everything went <<according>> to plan.\n"
    "Passage 3: Sort the files <<according>> to their size.\n"
    "Direct: \" to\", \"to\", \" To\", \" unto\"\n"
    "Steered: \" to\" (+4.1), \" To\" (+1.0), \" towards\" (+0.6)\n"
    "Explanation: the word \"according\", completed by \"to\"\n\n"
    "Feature C\n"
)


CHAT_TASK = (
    "You name what a feature inside a language model responds to and what it leads to. You are shown passages "
    "where it is active, with the tokens where it fires most strongly marked like <<this>>, the marked tokens "
    "listed with how often each is marked, and the tokens it pushes the model to write next (\"Direct\": through "
    "the output layer; \"Steered\": more likely when the feature is added, log-probability change in brackets). "
    "Reply with one short phrase, at most 12 words: what the marked tokens have in common and, where the two "
    "sides agree, what the feature leads to. Write only the phrase."
)


class EnsembleExplainer(Explainer):
    name = "ensemble"
    needs_output_evidence = True
    stop = ("\n", NEWLINE_MARK)
    demonstrations = DEMONSTRATIONS
    chat_task = CHAT_TASK

    def evidence_text(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return super().evidence_text(tokenizer, evidence, cfg) + output_lines(evidence.output, evidence)

    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return (INSTRUCTIONS + DEMONSTRATIONS + passages(tokenizer, evidence.windows, cfg.mark_threshold)
                + output_lines(evidence.output, evidence) + "Explanation:")

    def parse_text(self, text: str) -> str | None:
        """A one-phrase answer; a copied evidence line is not one."""
        return unless_copied(one_line_answer(text), LABELS + ("Passage ",))

    def describe(self, evidence: LatentEvidence) -> dict:
        return describe_output(evidence)
