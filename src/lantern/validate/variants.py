"""The explanations each planted latent is scored with: its TRUE one, a SHUFFLED one (another latent's true
explanation), a RANDOM one (an unrelated phrase of similar length), and two near misses after NeuronEval's
sanity checks (ICML 2025): PARTIAL (names only part of what the rule fires on) and OVERBROAD (the truth plus
something unrelated). Written in the form the score stage reads from explanations.parquet, so scoring runs
exactly as after `lantern explain`."""
from __future__ import annotations

import json

VARIANTS = ("true", "shuffled", "random", "partial", "overbroad")
NEAR_MISSES = ("partial", "overbroad")
"""Variants a scorer should rank below TRUE (reported per metric), beside the pass/fail verdict."""

RANDOM_PHRASES = (
    "names of ice cream flavours",
    "parts of a bicycle",
    "brands of sports cars",
    "kinds of pasta dishes",
    "tennis scores and umpire calls",
    "names of cryptocurrency coins",
    "chess openings and gambits",
    "types of skateboard tricks",
    "flavours of potato crisps",
)
"""Phrases that describe nothing in the embedded corpus (King James Bible, Python docs) or the planted rules."""


def parse_variants(text: str) -> tuple[str, ...]:
    """`true,shuffled,random[,partial][,overbroad]` in validate's order; the first three are the verdict's."""
    from lantern.errors import LanternError

    asked = {v.strip().lower() for v in text.split(",") if v.strip()}
    unknown = asked - set(VARIANTS)
    if unknown or not {"true", "shuffled", "random"} <= asked:
        raise LanternError(f"--variants {text!r}: choose from {', '.join(VARIANTS)}, always with true, shuffled "
                           f"and random")
    return tuple(v for v in VARIANTS if v in asked)


def parse_rules(text: str | None) -> tuple[int, ...] | None:
    """`--rules`: planted rule names and/or the groups `tuned` and `held-out`, comma-separated, as latent ids in
    rule order (None: every rule). Scorers that cost a full prompt pass per window (simulation, surprisal) can
    then be checked on a declared subset, reported as such."""
    from lantern.coders.planted import RULES
    from lantern.errors import LanternError

    if text is None or not text.strip():
        return None
    names = {rule.key: i for i, rule in enumerate(RULES)}
    chosen: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part in ("tuned", "held-out"):
            chosen |= {i for i, rule in enumerate(RULES) if rule.held_out == (part == "held-out")}
        elif part in names:
            chosen.add(names[part])
        else:
            raise LanternError(f"--rules: no planted rule {part!r}; choose from tuned, held-out, "
                               f"{', '.join(names)}")
    return tuple(sorted(chosen))


def variant_explanations(true: dict[int, str], scored: list[int],
                         partial: dict[int, str] | None = None) -> dict[str, dict[int, str]]:
    """Per variant, the explanation of every scored latent. SHUFFLED rotates the true explanations of the
    scored latents by one (each gets its neighbour's); with fewer than two scored latents it takes the next
    latent's of all planted ones, so no latent ever gets its own."""
    scored = sorted(scored)
    pool = scored if len(scored) >= 2 else sorted(true)
    shuffled = {}
    for latent in scored:
        at = pool.index(latent)
        others = [o for o in pool[at + 1:] + pool[:at] if true[o] != true[latent]]
        shuffled[latent] = true[others[0]] if others else RANDOM_PHRASES[0]
    random = {latent: RANDOM_PHRASES[latent % len(RANDOM_PHRASES)] for latent in scored}
    out = {"true": {latent: true[latent] for latent in scored}, "shuffled": shuffled, "random": random,
           "partial": {latent: (partial or {}).get(latent) or true[latent] for latent in scored},
           "overbroad": {latent: f"{true[latent]}, or {random[latent]}" for latent in scored}}
    return out


def explanation_rows(coder: str, variant: str, explanations: dict[int, str]) -> list[dict]:
    """explanations.parquet rows as explain_stage writes them, with no LLM call behind them."""
    return [{"coder": coder, "latent": latent, "explainer": f"planted-{variant}", "candidate": 0,
             "explanation": text, "failed": False, "error": None, "raw_answer": None, "prompt": "",
             "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0, "attempts": 0, "cached": False,
             "llm": "none (written by lantern validate)", "evidence": json.dumps({"variant": variant})}
            for latent, text in sorted(explanations.items())]
