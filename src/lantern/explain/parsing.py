"""Reading a one-phrase explanation out of an answer; shared by every explainer so they fail alike."""
from __future__ import annotations

import re

from lantern.text import NEWLINE_MARK

LABEL = re.compile(r"^[\s*_#>`-]*explanation[\s*_`]*[:\-]\s*", re.IGNORECASE | re.MULTILINE)
MAX_CHARS = 300


def clean_line(line: str) -> str | None:
    """One line reduced to its first sentence, without highlight marks, markup or wrapping quotes; None when
    nothing that reads as a phrase is left."""
    line = line.replace("<<", "").replace(">>", "")
    line = re.split(r"\.\s+(?=[A-Z])", line.strip(), maxsplit=1)[0]
    line = re.sub(r"\s+", " ", line.strip().strip("`*").strip()).rstrip(".").strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip()
    if len(line) >= 3 and re.search(r"[A-Za-z]", line):
        return line[:MAX_CHARS]
    return None


def first_phrase(text: str) -> str | None:
    """The first line of `text` that cleans to a phrase."""
    for line in text.splitlines():
        cleaned = clean_line(line)
        if cleaned:
            return cleaned
    return None


QUOTED_TOKEN = re.compile("[\"\u201c][^\"\u201c\u201d\\s]*\u21b5[^\"\u201c\u201d\\s]*[\"\u201d]|['\u2018]\u21b5+['\u2019]")
"""A quoted token that holds a newline mark ("↵", "x↵", “↵”, '↵'): no space inside, so a quote that opens on one
line and closes on another (`the word "a↵Explanation: "b"`) is not one."""


def as_lines(text: str) -> str:
    """`text` with each newline mark a line break, except inside a quoted token: a model that copies the prompt's
    line-break mark ends its line with it, one that lists a marked token ("↵") names it."""
    out, start = [], 0
    for quoted in QUOTED_TOKEN.finditer(text):
        out += [text[start:quoted.start()].replace(NEWLINE_MARK, "\n"), quoted.group()]
        start = quoted.end()
    return "".join(out) + text[start:].replace(NEWLINE_MARK, "\n")


def after_last_label(text: str) -> str | None:
    """The text after the last "Explanation:" label, or None when the answer has no such label."""
    parts = LABEL.split(as_lines(text))
    return parts[-1] if len(parts) > 1 else None


CHAT_LABEL = re.compile(r"^\s*(the\s+)?(commonality|common|shared)(\s+(word|feature|pattern|theme|token|element|thread)s?)?"
                        r"(\s*:|\s+-)\s+"
                        r"|^\s*(answer|phrase|feature)\s*:\s*", re.IGNORECASE)
"""Labels chat models put before their phrase (`Common word: "by"`): not part of the explanation."""


def one_line_answer(text: str) -> str | None:
    """A one-phrase answer: a bare phrase (a base model continuing "Explanation:") or, in a longer answer,
    the phrase after its last "Explanation:" label; a chat model's leading label such as "Common word:" is
    dropped."""
    labelled = after_last_label(text)
    phrase = first_phrase(labelled if labelled is not None else as_lines(text))
    label = CHAT_LABEL.match(phrase) if phrase else None
    if label is None:
        return phrase
    rest = phrase[label.end():].strip()
    if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":  # `Common word: "by"`: a quoted word alone
        rest = f"the word {rest}"
    return first_phrase(rest)


def unless_copied(phrase: str | None, labels: tuple[str, ...]) -> str | None:
    """None when the phrase is a copy of a prompt line (it starts with one of the prompt's own labels, e.g.
    `Active 1:`): a model that repeats its evidence has not explained it."""
    if phrase is None:
        return None
    head = phrase.lower()
    return None if any(head.startswith(label.lower()) for label in labels) else phrase


DEMONSTRATION_ANSWER = re.compile(r"^Explanation:\s*(.+)$", re.MULTILINE)


def demonstration_answers(demonstrations: str) -> frozenset[str]:
    """The explanations a prompt's worked examples give, lower-cased: an answer that repeats one of them is a
    copy of the prompt, not an explanation of the latent."""
    return frozenset(m.strip().lower().rstrip(".") for m in DEMONSTRATION_ANSWER.findall(demonstrations))


PLACEHOLDER = re.compile(r"^(feature|passage|text|explanation|active|answer)(\s+[a-z0-9]{1,2})?\s*:?$", re.IGNORECASE)


def degenerate(phrase: str) -> bool:
    """A small model stuck in a loop (`punctuation, punctuation, punctuation, ...`): most words repeat."""
    words = re.findall(r"\w+", phrase.lower())
    return len(words) >= 6 and len(set(words)) <= len(words) // 3


def unless_echo(phrase: str | None, copied: frozenset[str] = frozenset()) -> str | None:
    """None for an answer that is not an explanation: a worked example's explanation copied back, a bare
    label of the prompt's layout (`Feature A`, `Passage 2`), or a degenerate loop of one word."""
    if phrase is None:
        return None
    if phrase.strip().lower().rstrip(".") in copied or PLACEHOLDER.match(phrase.strip()) or degenerate(phrase):
        return None
    return phrase
