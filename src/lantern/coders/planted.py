"""Planted latents: a coder whose latents follow known rules on tokens, each with its true explanation.

It exists to check the scorers: with the true explanation a scorer must do well, with another latent's or an
unrelated one it must not (`lantern validate`). Latents are computed from the token ids alone (hookpoint
`embed_tokens:input`, one id per row) with lookup tables over the tokenizer's vocabulary. Rows of the
flattened batch are consecutive positions of each sequence, so the previous token is the previous row; a
sequence's first row is its BOS, which is never cached, so its wrong "previous token" never matters.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

import torch

from lantern.coders.base import SparseActs, SparseCoder
from lantern.errors import LanternError
from lantern.models.hookpoints import trunk

COLONS = ";:"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def is_digits(text: str) -> bool:
    s = text.strip()
    return bool(s) and all(c in "0123456789" for c in s)


def is_word(word: str) -> Callable[[str], bool]:
    return lambda text: text.strip().lower() == word


def is_capitalised(text: str) -> bool:
    s = text[1:] if text.startswith(" ") else text
    return s[:1].isalpha() and s[:1].isupper()


def is_colon(text: str) -> bool:
    s = text.strip()
    return bool(s) and all(c in COLONS for c in s)


def ends_in_ing(text: str) -> bool:
    s = text.strip()
    return len(s) >= 3 and s.isalpha() and s.lower().endswith("ing")


def is_one_of(words: set[str], case_sensitive: bool = False) -> Callable[[str], bool]:
    if case_sensitive:
        return lambda text: text.strip() in words
    return lambda text: text.strip().lower() in words


def is_closing_bracket(text: str) -> bool:
    s = text.strip()
    return bool(s) and all(c in ")]}" for c in s)


NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "fifteen", "twenty", "thirty", "forty", "fifty", "hundred", "thousand"}
PEOPLE = {"david", "moses", "abraham", "jacob", "isaac", "joseph", "aaron", "saul", "solomon", "peter", "paul",
          "pharaoh", "samuel", "elijah", "noah", "adam", "sarah", "rachel", "mary", "joshua", "daniel",
          "jonathan", "absalom", "abram", "laban", "esau", "elisha", "hezekiah", "jeremiah", "isaiah"}
PYTHON_KEYWORDS = {"def", "import", "lambda", "yield", "elif", "except", "raise", "assert", "None", "True", "False",
                   "async", "await", "nonlocal"}
FAMILY = {"father", "fathers", "mother", "mothers", "son", "sons", "daughter", "daughters", "brother", "brothers",
          "brethren", "sister", "sisters", "wife", "wives", "husband"}
BODY_PARTS = {"hand", "hands", "eye", "eyes", "head", "heads", "heart", "face", "mouth", "foot", "feet", "arm", "arms",
              "ear", "ears", "nose", "tongue", "lips", "finger", "fingers"}
DIVINE_NAMES = {"god", "lord", "jesus", "christ"}
SPEECH_VERBS = {"said", "saith", "spake", "say", "says", "saying", "spoke", "answered", "speak"}
NEGATIONS = {"not", "no", "never", "nor", "neither", "nothing"}
ARCHAIC_PRONOUNS = {"thou", "thee", "thy", "thine", "ye"}
PERSONAL_PRONOUNS = {"he", "she", "him", "her", "they", "them"}


@dataclass(frozen=True)
class Rule:
    """One planted latent: where it fires, and the phrase that truly explains it."""

    key: str
    explanation: str
    matches: Callable[[str], bool] | None
    """On a token's text; None: the latent fires nowhere (`always` false) or everywhere (`always` true)."""
    after: bool = False
    """Fire on the token that follows a matching one, not on the matching token itself."""
    always: bool = False
    partial: str = ""
    """An explanation that names only part of what the rule fires on (validate's PARTIAL variant)."""
    held_out: bool = False
    """Kept out of all prompt tuning: validate reports these rules separately, so the tuned prompts are judged on
    rules they were not tuned on."""


RULES: tuple[Rule, ...] = (  # dense rules (any punctuation) leave no all-zero windows for negatives
    Rule("digits", "numbers written with digits (0-9)", is_digits, partial="the digit 1"),
    Rule("after-of", "the word that comes right after the word \"of\"", is_word("of"), after=True,
         partial="the word \"the\" right after \"of\""),
    Rule("capitalised", "words that start with a capital letter", is_capitalised,
         partial="names of people, written with a capital letter"),
    Rule("the", "the word \"the\"", is_word("the"), partial="the word \"the\" at the start of a sentence"),
    Rule("colons", "colons and semicolons (: and ;)", is_colon, partial="semicolons (;)"),
    Rule("nowhere", "nothing at all: it never fires", None),
    Rule("everywhere", "every single token", None, always=True),
    Rule("and", "the word \"and\"", is_word("and"), partial="the word \"and\" between two names"),
    Rule("ing", "words ending in \"ing\"", ends_in_ing, partial="the word \"nothing\""),
    Rule("family", "words for family members (father, son, brother, wife)", is_one_of(FAMILY),
         partial="the word \"father\""),
    Rule("closing-brackets", "closing brackets: ), ] and }", is_closing_bracket,
         partial="a closing square bracket ]"),
    Rule("number-words", "numbers written as words (one, two, ten, hundred)", is_one_of(NUMBER_WORDS),
         partial="the word \"one\"", held_out=True),
    Rule("people", "names of people (David, Moses, Paul)", is_one_of(PEOPLE), partial="the name \"David\"",
         held_out=True),
    Rule("python-keywords", "Python keywords such as def, import, lambda, None", is_one_of(PYTHON_KEYWORDS, True),
         partial="the Python keyword \"import\"", held_out=True),
    Rule("body-parts", "parts of the body (hand, eye, head, heart)", is_one_of(BODY_PARTS),
         partial="the word \"hand\"", held_out=True),
    Rule("divine-names", "names for God (God, LORD, Jesus, Christ)", is_one_of(DIVINE_NAMES),
         partial="the word \"LORD\"", held_out=True),
    Rule("negation", "negation words (not, no, never, nor)", is_one_of(NEGATIONS), partial="the word \"never\"",
         held_out=True),
    Rule("thou", "the archaic pronouns thou, thee, thy, ye", is_one_of(ARCHAIC_PRONOUNS),
         partial="the word \"thou\"", held_out=True),
    Rule("speech-verbs", "verbs of speaking (said, saith, spake, answered)", is_one_of(SPEECH_VERBS),
         partial="the word \"saith\"", held_out=True),
    Rule("pronouns", "the pronouns he, she, him, her, they, them", is_one_of(PERSONAL_PRONOUNS),
         partial="the word \"she\"", held_out=True),
)


def token_texts(tokenizer) -> list[str]:
    """The text of every vocabulary id on its own (SentencePiece `▁` and GPT-2 `Ġ` as spaces, ASCII byte
    tokens as their character, other bytes and special tokens as ""), as the rules read it."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    out = []
    for i, piece in enumerate(pieces):
        byte = _BYTE_TOKEN.match(piece or "")
        if i in special or piece is None:
            out.append("")
        elif byte:
            value = int(byte.group(1), 16)
            out.append(chr(value) if value < 0x80 else "")
        else:
            out.append(piece.replace("\u2581", " ").replace("Ġ", " ").replace("Ċ", "\n"))
    return out


def magnitude(ids: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """1 + a deterministic variation in [0, 1) from the token and its predecessor, so deciles exist."""
    mixed = (ids.long() * 2654435761 + (prev.long() + 1) * 40503) % 1000
    return 1.0 + mixed.float() / 1000.0


class PlantedCoder(SparseCoder):
    """Latent i follows `RULES[i]`; values are `magnitude` where the rule holds, 0 elsewhere."""

    def __init__(self, tokenizer, rules: tuple[Rule, ...] = RULES, name: str = "planted",
                 model: torch.nn.Module | None = None):
        texts = token_texts(tokenizer)
        self.rules = rules
        self.tables = torch.tensor([[bool(r.matches and r.matches(t)) for t in texts] for r in rules],
                                   dtype=torch.bool)
        self.after = torch.tensor([r.after for r in rules])
        self.always = torch.tensor([r.always for r in rules])
        self.vocab_hash = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        self.name = name
        self.hookpoint = "embed_tokens:input"
        self.d_in = 1
        self.num_latents = len(rules)
        self.kind = "planted"
        self._directions = None if model is None else self._output_directions(model)
        if model is not None:
            self.write_hookpoint = f"layers.{len(trunk(model).layers) - 1}"

    def _output_directions(self, model: torch.nn.Module) -> torch.Tensor:
        """What each latent writes: a planted latent promotes the tokens it fires on. Its direction, added to
        the residual stream before the final norm, raises the logits of its rule's tokens over the average
        token: the mean unembedding row of those tokens minus that of all tokens, divided by the final norm's
        per-dimension gain. Latents with no token set of their own (after "of", nowhere, everywhere) write
        nothing (zero rows), so output-side scorers report them as failed rather than invent an effect."""
        from lantern.explain.output_evidence import final_norm

        unembed = model.get_output_embeddings().weight.detach().float()[: self.tables.shape[1]]
        width = unembed.shape[1]
        with torch.no_grad():
            gain = final_norm(model)(torch.ones(1, width, dtype=next(model.parameters()).dtype)).float()[0]
        if gain.abs().max() < 1e-6:  # a norm that centres (LayerNorm) maps ones to 0: take no gain
            gain = torch.ones(width)
        gain = torch.where(gain.abs() < 1e-3, torch.full_like(gain, 1e-3), gain)
        average = unembed.mean(0)
        rows = []
        for rule, table in zip(self.rules, self.tables):
            if rule.after or rule.always or not bool(table.any()):
                rows.append(torch.zeros(width))
            else:
                rows.append((unembed[table].mean(0) - average) / gain)
        return torch.stack(rows)

    def decoder_directions(self) -> torch.Tensor | None:
        return self._directions

    def explanations(self) -> dict[int, str]:
        """The true explanation of every latent."""
        return {i: r.explanation for i, r in enumerate(self.rules)}

    def encode(self, x: torch.Tensor) -> SparseActs:
        """x: [n, 1] token ids, consecutive positions of whole sequences."""
        ids = x.reshape(-1).long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.tables.shape[1]):
            raise LanternError(f"the planted coder got token ids outside its tokenizer's vocabulary "
                               f"(0..{self.tables.shape[1] - 1}): was it built with the subject model's tokenizer?")
        prev = torch.cat([ids.new_full((min(1, ids.numel()),), -1), ids[:-1]])
        on_token = self.tables[:, ids]                                   # [L, n]
        on_prev = torch.zeros_like(on_token)
        on_prev[:, 1:] = self.tables[:, prev[1:]]
        fires = torch.where(self.after[:, None], on_prev, on_token) | self.always[:, None]
        values = fires.T.float() * magnitude(ids, prev)[:, None]
        indices = torch.arange(self.num_latents, dtype=torch.int32).expand(ids.numel(), -1)
        return SparseActs(indices=indices, values=values)

    def describe(self) -> dict:
        return {**super().describe(), "rules": [r.key for r in self.rules], "vocab": self.vocab_hash}
