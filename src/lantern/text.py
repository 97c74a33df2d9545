"""Token ids to readable per-token strings (SentencePiece spaces and byte-fallback tokens handled)."""
from __future__ import annotations

import re

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """One display string per token; byte-fallback pieces of one character are joined on its last byte,
    so a multi-byte character is never mangled (the earlier bytes become empty strings)."""
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    out: list[str] = []
    pending = bytearray()
    for piece in pieces:
        match = _BYTE_TOKEN.match(piece or "")
        if match:
            byte = int(match.group(1), 16)
            if byte & 0xC0 != 0x80:  # a lead byte starts a new character: drop orphan bytes before it
                pending.clear()
            pending.append(byte)
            try:
                out.append(pending.decode("utf-8"))
                pending.clear()
            except UnicodeDecodeError:
                out.append("")
            continue
        if pending:
            pending.clear()
        out.append((piece or "").replace("\u2581", " ").replace("Ġ", " ").replace("Ċ", "\n"))
    return out


NEWLINE_MARK = "\u21b5"
"""How a newline inside a window is shown, so each window stays on one prompt line (models copy it back)."""


def flatten_whitespace(s: str) -> str:
    """Keep a window on one prompt line."""
    return s.replace("\r", " ").replace("\n", NEWLINE_MARK)
