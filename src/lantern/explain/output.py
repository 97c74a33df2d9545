"""Output-centric: explain a latent by what it makes the model write next, not by the text it reads.

Shows the tokens its decoder direction promotes through the unembedding (logit lens) and the tokens whose
probability rises when the direction is added to the model (steering); both come from output_evidence.py.
Latents that read one thing and write another (e.g. "the word before a number") are often easier to name
from this side."""
from __future__ import annotations

from lantern.errors import LanternError
from lantern.explain.base import Explainer, LatentEvidence, OutputEvidence
from lantern.explain.format import quoted_tokens
from lantern.explain.parsing import one_line_answer, unless_copied
from lantern.explain.settings import ExplainerConfig
from lantern.text import NEWLINE_MARK

INSTRUCTIONS = (
    "We study features inside a language model by what they make it write. For each feature we list the "
    "tokens it pushes the model to produce next, read in two ways. \"Direct\": the tokens its direction favours "
    "when read straight through the model's output layer. \"Steered\": the tokens that became more likely (the "
    "change in log-probability is in brackets) when we added the feature to the model while it read plain "
    "everyday sentences. One short phrase says what the feature makes the model say next.\n\n"
)
DEMONSTRATIONS = (
    "Feature A\n"
    "Direct: \" dollars\", \" pounds\", \" euros\", \" cents\", \" yen\"\n"
    "Steered: \" dollars\" (+3.2), \" pounds\" (+2.9), \" cash\" (+1.7), \" price\" (+1.1)\n"
    "Explanation: names of currencies and amounts of money as the next word\n\n"
    "Feature B\n"
    "Direct: \" not\", \"n't\", \" never\", \" no\", \" neither\"\n"
    "Steered: \" not\" (+2.4), \" never\" (+2.0), \" nothing\" (+1.2), \" hardly\" (+0.9)\n"
    "Explanation: negation words such as \"not\" and \"never\"\n\n"
    "Feature C\n"
)
LABELS = ("Direct:", "Steered:")


def output_lines(output: OutputEvidence | None, evidence: LatentEvidence) -> str:
    """The two evidence lines of a latent; an explainer that shows them cannot run without them."""
    if output is None:
        raise LanternError(f"{evidence.coder} latent {evidence.latent}: no output evidence was computed; the "
                           f"explainer needs the subject model and the coder's decoder directions")
    return (f"Direct: {quoted_tokens(output.logit_lens)}\n"
            f"Steered: {quoted_tokens(output.steering, signed=True)}\n")


def describe_output(evidence: LatentEvidence) -> dict:
    return {"windows": len(evidence.windows), **(evidence.output.to_dict() if evidence.output else {})}


CHAT_TASK = (
    "You name what a feature inside a language model makes the model write next. You are shown the tokens it "
    "pushes the model to produce, read in two ways. \"Direct\": the tokens its direction favours through the "
    "model's output layer. \"Steered\": the tokens that became more likely (change in log-probability in "
    "brackets) when the feature was added to the model while it read plain sentences. Reply with one short "
    "phrase, at most 12 words, saying what the feature makes the model write next. Write only the phrase."
)


class OutputExplainer(Explainer):
    name = "output"
    needs_output_evidence = True
    stop = ("\n", NEWLINE_MARK)
    demonstrations = DEMONSTRATIONS
    chat_task = CHAT_TASK
    chat_question = "What does the feature make the model write next? Reply with one short phrase only."

    def evidence_text(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return output_lines(evidence.output, evidence)

    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return INSTRUCTIONS + DEMONSTRATIONS + output_lines(evidence.output, evidence) + "Explanation:"

    def parse_text(self, text: str) -> str | None:
        """A one-phrase answer; a copied "Direct:" / "Steered:" line is not one."""
        return unless_copied(one_line_answer(text), LABELS)

    def describe(self, evidence: LatentEvidence) -> dict:
        return describe_output(evidence)
