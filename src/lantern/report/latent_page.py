"""What one latent's page shows, gathered from the run's tables: explanations, scores with intervals, windows with
tokens shaded by activation (explain, validation and test apart, negatives by source) and each scorer's verdict on
each window, output evidence, intruder trials and intervention samples."""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict

from markupsafe import Markup, escape

from lantern.report.data import RunData
from lantern.text import NEWLINE_MARK, token_strings

SPLITS = (("explain", "Explain examples", "shown to the explainer"),
          ("validation", "Validation examples", "used only to choose among candidate explanations"),
          ("test", "Test examples", "held out: the scorers judged these"))

_ROW_KEYS = {"coder", "latent", "scorer", "metric", "score", "score_ci_low", "score_ci_high", "n", "n_failed"}
"""Score-row columns shown in their own cells; every other non-null column is listed as a detail."""


class PieceTable:
    """Token id → tokenizer piece and its escaped display text, each worked out once per distinct id (a run's
    records repeat ids a lot); `token_strings` reads it like a tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pieces: dict[int, str] = {}
        self._html: dict[int, str | None] = {}
        """None for byte-fallback pieces: their text depends on the neighbouring bytes."""

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        missing = [i for i in dict.fromkeys(ids) if i not in self.pieces]
        if missing:
            self.pieces.update(zip(missing, self.tokenizer.convert_ids_to_tokens(missing)))
        return [self.pieces[i] for i in ids]

    def html(self, ids: list[int]) -> list[str]:
        """Each token's text, HTML-escaped, newlines shown as a mark (windows stay on one line)."""
        known = self._html
        missing = [i for i in dict.fromkeys(ids) if i not in known]
        for i, piece in zip(missing, self.convert_ids_to_tokens(missing)):
            known[i] = None if _BYTE_PIECE.match(piece or "") else _display(token_strings(self, [i])[0])
        out = [known[i] for i in ids]
        if None in out:
            return [_display(text) for text in token_strings(self, ids)]
        return out


_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _display(text: str) -> str:
    return str(escape(text.replace("\n", NEWLINE_MARK)))


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value, digits: int = 3) -> str:
    """A number for a table cell: 3 significant decimals, integers as they are, blank for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def interval(row: dict, name: str) -> str:
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if finite(low) and finite(high):
        return f"[{fmt(low)}, {fmt(high)}]"
    return ""


def shaded(texts: list[str], activations: list[float], scale: float) -> Markup:
    """The window as HTML (`texts`: escaped token texts): each firing token in a span whose background opacity
    is |activation| / scale (orange for positive, blue for negative values), its value in the tooltip."""
    parts = []
    for text, act in zip(texts, activations):
        if act == 0 or not scale:
            parts.append(text)
            continue
        alpha = min(abs(act) / scale, 1.0)
        sign = "p" if act > 0 else "n"
        parts.append(f'<span class="t {sign}" style="--a:{alpha:.3f}" title="{act:.4g}">{text}</span>')
    return Markup("".join(parts))


def _verdict(row: dict) -> dict:
    correct = row.get("correct")
    return {"scorer": row["scorer"], "variant": row.get("variant") or "",
            "label": row.get("label"), "prediction": row.get("prediction"),
            "value": fmt(row.get("value")), "read_as": row.get("read_as") or "",
            "error": row.get("error"),
            "mark": "failed" if row.get("error") or row.get("read_as") == "failed"
            else ("right" if correct is True else "wrong" if correct is False else "none")}


def _windows(rows: list[dict], pieces: PieceTable, scale: float, verdicts: dict) -> list[dict]:
    out = []
    for r in rows:
        out.append({"start": r["start"], "decile": r["decile"], "source": r["source"], "kind": r["kind"],
                    "neighbour": r.get("neighbour", -1), "max": fmt(r["max_activation"]),
                    "html": shaded(pieces.html(r["tokens"]), r["activations"], scale),
                    "verdicts": verdicts.get((r["start"], r["kind"]), [])})
    return out


def chosen_candidate(rows: list[dict], selection: list[dict]) -> int | None:
    """The candidate the scores belong to: best-of-k's pick where it chose, else the only (or first) candidate
    that did not fail, which is what the score stage scores; None when every candidate failed."""
    picked = [r["candidate"] for r in selection if r.get("chosen")]
    if picked:
        return picked[0]
    good = sorted(r.get("candidate") or 0 for r in rows if not r.get("failed"))
    return good[0] if good else None


def _explanations(data: RunData, coder: str, latent: int) -> list[dict]:
    rows = data.explanations.rows(coder, latent)
    selection = {r["candidate"]: r for r in data.selection.rows(coder, latent)}
    chosen = chosen_candidate(rows, list(selection.values()))
    out = []
    for r in sorted(rows, key=lambda r: r.get("candidate") or 0):
        candidate = r.get("candidate") or 0
        pick = selection.get(candidate)
        out.append({"candidate": candidate, "text": r.get("explanation"), "failed": r.get("failed"),
                    "error": r.get("error"), "explainer": r.get("explainer"), "llm": r.get("llm"),
                    "prompt": r.get("prompt"), "raw_answer": r.get("raw_answer"),
                    "tokens": f'{fmt(r.get("prompt_tokens"))} prompt + {fmt(r.get("completion_tokens"))} completion',
                    "chosen": candidate == chosen,
                    "validation": ({"ba": fmt(pick.get("validation_balanced_accuracy")),
                                    "auroc": fmt(pick.get("validation_auroc")), "n": fmt(pick.get("validation_n"))}
                                   if pick else None)})
    return out


def _output_evidence(raw_rows: list[dict]) -> dict | None:
    """Logit-lens and steering tokens from the evidence an output/ensemble explainer stored (JSON)."""
    for r in raw_rows:
        try:
            evidence = json.loads(r.get("evidence") or "{}")
        except (TypeError, ValueError):
            continue
        if isinstance(evidence, dict) and (evidence.get("logit_lens") or evidence.get("steering")):
            return {"logit_lens": evidence.get("logit_lens") or [], "steering": evidence.get("steering") or [],
                    "site": evidence.get("site"), "steering_norm": evidence.get("steering_norm")}
    return None


def _scores(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        details = [(k, fmt(v)) for k, v in r.items()
                   if k not in _ROW_KEYS and not k.endswith(("_ci_low", "_ci_high")) and v is not None
                   and not (isinstance(v, float) and math.isnan(v)) and not isinstance(v, (list, dict))]
        details = [(k, f"{v} {interval(r, k)}".strip()) for k, v in details]
        out.append({"scorer": r["scorer"], "metric": r.get("metric"), "score": fmt(r.get("score")),
                    "interval": interval(r, "score"), "n": fmt(r.get("n")), "n_failed": fmt(r.get("n_failed")),
                    "details": details})
    return out


_GROUP_FIGURES = ("accuracy", "mean_score", "auroc", "pearson", "spearman")


def _grouped_figures(rows: list[dict], by: str) -> dict[str, dict]:
    """Per scorer, the figures per decile (or negative source) that are known, with their intervals."""
    per_scorer: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        per_scorer[r["scorer"]].append(r)
    out = {}
    for scorer, members in per_scorer.items():
        columns = [f for f in _GROUP_FIGURES if any(finite(m.get(f)) for m in members)]
        order = sorted(members, key=lambda m: -m[by] if isinstance(m[by], int) else str(m[by]))
        out[scorer] = {"columns": columns,
                       "rows": [{"group": "negatives" if by == "decile" and m[by] == 0 else m[by],
                                 "n": fmt(m.get("n")),
                                 "n_failed": fmt(m.get("n_failed")),
                                 "values": [f"{fmt(m.get(f))} {interval(m, f)}".strip() for f in columns]}
                                for m in order]}
    return out


def _intervention(rows: list[dict]) -> list[dict]:
    """Intervention samples by target KL, the latent's own direction first, then the controls."""
    order = {"latent": 0, "random-direction": 1, "shuffled-explanation": 2}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("target_kl"), r.get("variant"))].append(r)
    out = []
    for (kl, variant), members in sorted(groups.items(), key=lambda kv: (kv[0][0] if finite(kv[0][0]) else 0.0,
                                                                         order.get(kv[0][1], 9), str(kv[0][1]))):
        values = [m["value"] for m in members if finite(m.get("value"))]
        out.append({"target_kl": f"{kl:g}" if finite(kl) else "–", "variant": variant,
                    "explanation": members[0].get("explanation_used") if variant == "shuffled-explanation" else None,
                    "mean": fmt(sum(values) / len(values)) if values else "–", "n": len(values),
                    "samples": [{"prompt": m.get("prompt_text"), "clean": m.get("clean_text"),
                                 "steered": m.get("steered_text"), "value": fmt(m.get("value")),
                                 "scale": fmt(m.get("scale")),
                                 "achieved_kl": f'{m["achieved_kl"]:.3g}' if finite(m.get("achieved_kl")) else "–",
                                 "error": m.get("error") or m.get("error_reason")} for m in members]})
    return out


def latent_view(data: RunData, coder: str, latent: int, pieces: PieceTable, summary: dict | None) -> dict:
    """Everything the latent template renders (plain values and pre-escaped window HTML)."""
    records = data.records(coder).rows(latent)
    scale = max((abs(a) for r in records for a in r["activations"]), default=0.0)
    examples = data.examples.rows(coder, latent)
    verdicts: dict[tuple, list[dict]] = defaultdict(list)
    for e in examples:
        if e.get("kind") in ("activating", "negative") and e.get("start") is not None:
            verdicts[(e["start"], e["kind"])].append(_verdict(e))
    activating = [r for r in records if r["kind"] == "activating"]
    splits = []
    for split, title, note in SPLITS:
        mine = [r for r in activating if r["split"] == split]
        if mine:
            splits.append({"split": split, "title": title, "note": note,
                           "windows": _windows(mine, pieces, scale, verdicts)})
    negatives: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["kind"] == "negative":
            negatives[f'{r["source"]} ({r["split"]})'].append(r)
    raw_explanations = data.explanations.rows(coder, latent)
    manifest = data.manifests.get(coder, {})
    scores = _scores(data.scores.rows(coder, latent))
    return {
        "coder": coder, "latent": latent, "summary": summary or {}, "scale": fmt(scale), "scored": bool(scores),
        "hookpoint": manifest.get("coder", {}).get("hookpoint"),
        "n_tokens": manifest.get("n_tokens_cached", manifest.get("n_tokens")),
        "explanations": _explanations(data, coder, latent),
        "output": _output_evidence(raw_explanations),
        "scores": scores,
        "by_decile": _grouped_figures(data.by_decile.rows(coder, latent), "decile"),
        "by_source": _grouped_figures(data.by_source.rows(coder, latent), "source"),
        "splits": splits,
        "negatives": [{"source": source, "windows": _windows(rows, pieces, scale, verdicts)}
                      for source, rows in sorted(negatives.items())],
        "intruder": [{"variant": e.get("variant"), "source": e.get("source"), "decile": e.get("decile"),
                      "prediction": e.get("prediction"), "value": fmt(e.get("value")), **_verdict(e)}
                     for e in examples if e.get("kind") == "intruder-trial"],
        "intervention": _intervention([e for e in examples if e["scorer"] == "intervention"]),
    }
