"""Per-token display strings with the real Gemma 3 tokenizer, byte-fallback characters included."""

from __future__ import annotations

import pytest

from lantern.text import flatten_whitespace, token_strings

TEXT = "Hello world, naïve café 𓀀𓁐 ꙮ 🦜\n  def f():\n\treturn 1"


def test_one_string_per_token_and_they_join_to_the_text(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert sum(p.startswith("<0x") for p in pieces) >= 8  # the test really exercises byte fallback
    strings = token_strings(tokenizer, ids)
    assert len(strings) == len(ids)
    assert "".join(strings) == TEXT
    assert "𓀀" in strings and "𓁐" in strings  # each shown on the token of its last byte


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_window_starting_inside_a_character_keeps_the_next_ones(tokenizer, cut):
    """A window can start on a continuation byte; the orphan bytes are blank, the following characters intact."""
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    first_byte = tokenizer.convert_ids_to_tokens(ids).index("<0xF0>")
    strings = token_strings(tokenizer, ids[first_byte + cut:])
    assert strings[: 4 - cut] == [""] * (4 - cut)
    assert "".join(strings) == TEXT[TEXT.index("𓁐"):]


def test_flatten_whitespace():
    assert flatten_whitespace("a\r\nb\nc") == "a \u21b5b\u21b5c"
