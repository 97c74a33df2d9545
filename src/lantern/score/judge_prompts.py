"""Chat forms of the yes/no questions detection and fuzzing ask an instruction-tuned judge.

Why separate forms: a small chat model (1.5B) answers a vague question ("is the feature active?") with the same
P(yes) for every text, but answers a concrete one ("does the text contain the word "and"?") well, and reads a
text far better token by token when its words are listed. Each form is a (system, user) pair; the system
message and the explanation come first and the window last, so consecutive prompts of one latent share their
prefix and an in-process engine reuses its KV cache. `JUDGE_FORM` is the one scorers use; the others are kept
for `benchmarks/tune_judge_prompts.py`, which measured them on the tuning half of the planted rules (9 rules,
detection, Qwen2.5-Coder-1.5B-Instruct; mean AUROC TRUE vs SHUFFLED): `contains` 0.711 vs 0.531, `words` 0.776 vs
0.487, `text+words` 0.794 vs 0.586. `words` separates most and costs the fewest prompt tokens: the running text
lets the judge answer yes for dense rules (capitalised words, "the") whatever the explanation says.
"""
from __future__ import annotations

from lantern.text import NEWLINE_MARK, token_strings

DETECTION_SYSTEM = (
    "You check texts against the description of a feature of a language model. The feature fires on certain "
    "words or symbols, and the description says which. For each text, answer with one word: Yes if at least one "
    "word or symbol of the text fits the description, No if none does."
)
FUZZING_SYSTEM = (
    "You check marked words against the description of a feature of a language model. The feature fires on "
    "certain words or symbols, and the description says which. In each text some words are marked like "
    "<<this>>. Answer with one word: Yes if the marked words are ones the description names, No if they are not."
)
YES_NO = "Answer Yes or No."


def word_list(tokenizer, tokens: list[int], marks: list[bool] | None = None) -> str:
    """The window's tokens separated by ` | ` (marked ones as <<token>>), so a small model reads each one."""
    pieces = token_strings(tokenizer, tokens)
    shown = []
    for i, piece in enumerate(pieces):
        text = piece.replace("\n", NEWLINE_MARK).strip()
        if not text:
            continue
        shown.append(f"<<{text}>>" if marks is not None and marks[i] else text)
    return " | ".join(shown)


def detection_messages(form: str, explanation: str, text: str, words: str) -> tuple[tuple[str, str], ...]:
    if form == "contains":
        user = f"Description: {explanation}\n\nText: {text}\n\nDoes the text contain {explanation}? {YES_NO}"
    elif form == "words":
        user = (f"Description: {explanation}\n\nWords: {words}\n\nIs one of these words {explanation}? {YES_NO}")
    elif form == "text+words":
        user = (f"Description: {explanation}\n\nText: {text}\nWords: {words}\n\n"
                f"Is one of these words {explanation}? {YES_NO}")
    else:
        raise ValueError(f"unknown judge form {form!r}")
    return (("system", DETECTION_SYSTEM), ("user", user))


def fuzzing_messages(form: str, explanation: str, text: str, words: str) -> tuple[tuple[str, str], ...]:
    if form == "contains":
        user = (f"Description: {explanation}\n\nText: {text}\n\nAre the words marked <<like this>> "
                f"{explanation}? {YES_NO}")
    elif form in ("words", "text+words"):
        shown = f"Text: {text}\nWords: {words}" if form == "text+words" else f"Words: {words}"
        user = (f"Description: {explanation}\n\n{shown}\n\nAre the words marked <<like this>> {explanation}? "
                f"{YES_NO}")
    else:
        raise ValueError(f"unknown judge form {form!r}")
    return (("system", FUZZING_SYSTEM), ("user", user))


JUDGE_FORMS = ("contains", "words", "text+words")
JUDGE_FORM = "words"
