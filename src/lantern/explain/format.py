"""How a window is shown to an LLM: one line of text, activating tokens marked like <<this>>."""
from __future__ import annotations

from lantern.text import flatten_whitespace, token_strings

MARK_OPEN, MARK_CLOSE = "<<", ">>"


def marked_text(tokenizer, tokens: list[int], marks: list[bool]) -> str:
    """Join tokens, wrapping each run of marked tokens in one pair of marks (leading spaces stay outside)."""
    pieces = token_strings(tokenizer, tokens)
    out: list[str] = []
    open_run = False
    for piece, marked in zip(pieces, marks):
        if marked and not open_run:
            stripped = piece.lstrip(" ")
            out.append(piece[: len(piece) - len(stripped)] + MARK_OPEN + stripped)
            open_run = True
        elif not marked and open_run:
            out.append(MARK_CLOSE + piece)
            open_run = False
        else:
            out.append(piece)
    if open_run:
        out.append(MARK_CLOSE)
    return flatten_whitespace("".join(out)).strip()


def plain_text(tokenizer, tokens: list[int]) -> str:
    return flatten_whitespace("".join(token_strings(tokenizer, tokens))).strip()


def activation_marks(activations: list[float], threshold: float) -> list[bool]:
    """Tokens whose activation exceeds `threshold` times the window's own maximum."""
    peak = max(activations) if activations else 0.0
    return [a > 0 and a >= threshold * peak for a in activations]


def passages(tokenizer, windows, threshold: float, label: str = "Passage") -> str:
    """Numbered prompt lines, one per window (`windows`: objects with tokens and activations)."""
    return "".join(f"{label} {number}: {marked_text(tokenizer, w.tokens, activation_marks(w.activations, threshold))}\n"
                   for number, w in enumerate(windows, 1))


def marked_tokens_summary(tokenizer, windows, threshold: float, limit: int = 15) -> str:
    """The marked strings of all windows by how often they are marked, like `"stand" (5), "withstand" (2)`: a
    small chat model names a token-level pattern far more reliably when the marked tokens are listed for it."""
    counts: dict[str, int] = {}
    for w in windows:
        marks = activation_marks(w.activations, threshold)
        pieces = token_strings(tokenizer, w.tokens)
        run: list[str] = []
        for piece, marked in zip(pieces + [""], marks + [False]):
            if marked:
                run.append(piece)
            elif run:
                text = flatten_whitespace("".join(run)).strip()
                if text:
                    counts[text] = counts.get(text, 0) + 1
                run = []
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return ", ".join(f'"{text}" ({n})' for text, n in ranked) if ranked else "(none)"


def quoted_tokens(entries, signed: bool = False) -> str:
    """Tokens as `"text"` (spaces kept visible inside the quotes, newlines shown as a mark), comma separated;
    with `signed`, each followed by its score like `(+1.8)`."""
    shown = []
    for entry in entries:
        text = '"' + flatten_whitespace(entry.token) + '"'
        shown.append(f"{text} ({entry.score:+.1f})" if signed else text)
    return ", ".join(shown) if shown else "(none)"
