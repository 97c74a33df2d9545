"""Chain of thought: the explainer first reasons over the marked tokens in a few lines, then commits to one
"Explanation:" line. Slower (longer answers), but a model that lists what it sees before naming it tends to
name the shared pattern rather than the first passage."""
from __future__ import annotations

from lantern.explain.base import Explainer, LatentEvidence
from lantern.explain.format import passages
from lantern.explain.parsing import after_last_label, first_phrase
from lantern.explain.settings import ExplainerConfig

INSTRUCTIONS = (
    "These notes describe features found inside a language model. A feature fires on certain tokens of a text; "
    "in each passage below those tokens are wrapped in <<double angle brackets>>. For every feature we first "
    "think it through in two to four short lines (which tokens are marked, what comes before and after them, "
    "what they all share), and then write one line starting with \"Explanation:\" that names the shared "
    "pattern in a few words.\n\n"
)
DEMONSTRATIONS = (
    "Feature A\n"
    "Passage 1: Call me on <<Monday>> or Tuesday evening.\n"
    "Passage 2: The shop is closed every <<Sunday>>.\n"
    "Passage 3: We met again on <<Friday>> after work.\n"
    "Thinking: The marked tokens are Monday, Sunday and Friday. Each is a day of the week. In passage 1 "
    "Tuesday is not marked, so it is the first day named in a sentence that counts.\n"
    "Explanation: the first day of the week named in a sentence\n\n"
    "Feature B\n"
    "Passage 1: if x <<==>> 0: return\n"
    "Passage 2: assert result <<==>> expected\n"
    "Passage 3: while count <<!=>> limit:\n"
    "Thinking: The marks fall on == and != in code. Both compare two values. Assignment signs are not marked.\n"
    "Explanation: comparison operators in program code\n\n"
    "Feature C\n"
)
MAX_TOKENS = 256


CHAT_TASK = (
    "You name what a feature inside a language model responds to. A feature fires on some tokens of a text; in "
    "the passages you are shown, the tokens where it fires most strongly are marked like <<this>>, and the marked "
    "tokens are listed with how often each is marked. First think in two to four short lines: which tokens are "
    "marked, what comes right before and after them, what they all share. Then write one last line that starts "
    "with \"Explanation:\" and names the shared pattern in at most 12 words."
)


class ChainOfThoughtExplainer(Explainer):
    name = "cot"
    max_tokens = MAX_TOKENS
    stop = ("\nFeature ",)
    demonstrations = DEMONSTRATIONS
    chat_task = CHAT_TASK
    chat_question = "Think in two to four short lines, then give the line starting with \"Explanation:\"."

    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        return (INSTRUCTIONS + DEMONSTRATIONS + passages(tokenizer, evidence.windows, cfg.mark_threshold)
                + "Thinking:")

    def parse_text(self, text: str) -> str | None:
        """The phrase on the last "Explanation:" line; reasoning without that line is no explanation."""
        tail = after_last_label(text)
        return None if tail is None else first_phrase(tail)
