"""Scorers by name, as `--scorers` and `RunConfig.scorers` spell them."""
from __future__ import annotations

from lantern.errors import LanternError
from lantern.score.base import Scorer
from lantern.score.detection import DetectionScorer
from lantern.score.embedding import EmbeddingScorer
from lantern.score.fuzzing import FuzzingScorer
from lantern.score.intervention import InterventionScorer
from lantern.score.intruder import IntruderScorer
from lantern.score.settings import ScorerConfig
from lantern.score.simulation import SimulationScorer
from lantern.score.surprisal import SurprisalScorer

SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (
    DetectionScorer, FuzzingScorer, SimulationScorer, SurprisalScorer, EmbeddingScorer, IntruderScorer,
    InterventionScorer)}


def parse_scorers(spec: str) -> list[str]:
    """`a,b,c` → names, each checked (a typo fails before any model is loaded)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise LanternError("--scorers needs at least one scorer name")
    for name in names:
        get_scorer(name)
    return list(dict.fromkeys(names))


def get_scorer(name: str, settings: ScorerConfig | None = None) -> Scorer:
    try:
        cls = SCORERS[name]
    except KeyError:
        raise LanternError(f"unknown scorer {name!r}; available: {', '.join(SCORERS)}") from None
    return cls(settings)
