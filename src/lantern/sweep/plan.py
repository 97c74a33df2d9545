"""What a sweep's variants can share, and what the sweep will cost before it starts.

Artefacts are shared by what they depend on: the activation cache by every variant (a sweep varies no cache
setting), records by variants with equal record settings, explanations by variants that also share the
explainer settings and the LLM. Each group's first variant makes the artefact; the others reuse it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from lantern.config import RunConfig
from lantern.records.build import N_DECILES

SECONDS_PER_EXPLANATION = {"embedded": 13.9, "embedded-0.5b": 6.8}
"""Measured on 2 cores (benchmarks/RESULTS.md): the embedded 1.5B explains a latent in 13.9 s (default run), the
0.5B in 6.8 s (the explainer comparison); any other explainer is costed as the 1.5B."""
SECONDS_PER_CALL = {"detection": 1.46, "fuzzing": 1.46, "simulation": 4.0, "surprisal": 0.6, "intruder": 3.0,
                    "intervention": 1.5, "embedding": 0.0}
"""Seconds per scoring call of the embedded 1.5B on 2 cores (detection/fuzzing measured in the default run; the
others from their prompt tokens per call at the measured ~64 evaluated prompt tokens/s)."""


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def records_key(cfg: RunConfig) -> str:
    """Variants with the same key can share one set of records."""
    return _digest(dataclasses.asdict(cfg.records))


def explain_key(cfg: RunConfig) -> str:
    """Variants with the same key can share explanations: same records, explainer settings and LLM."""
    llm = (cfg.llm.url, cfg.llm.model, cfg.llm.backend, cfg.llm.api)
    return _digest(records_key(cfg), dataclasses.asdict(cfg.explainer), llm)


def scoring_calls(cfg: RunConfig) -> dict[str, float]:
    """LLM calls per latent for each of the run's scorers, from its record settings."""
    positives = cfg.records.n_test_per_decile * N_DECILES
    negatives = cfg.records.n_negatives + cfg.records.n_similar_negatives + cfg.records.n_neighbour_negatives
    per_prompt = max(cfg.scoring.examples_per_prompt, 1)
    calls = {"detection": (positives + negatives) / per_prompt, "fuzzing": 2 * positives / per_prompt,
             "simulation": positives + negatives, "surprisal": 2 * (positives + negatives), "embedding": 0,
             "intruder": 2, "intervention": 6 * len(cfg.scoring.intervention_targets) * cfg.scoring.intervention_prompts}
    return {name: calls.get(name, positives + negatives) for name in cfg.scorers}


@dataclass
class Cost:
    """The planned work of a sweep, at the embedded models' measured rates on 2 cores."""

    variants: int
    latents: int
    """Latents per variant (all coders)."""
    records_built: int
    """Record sets built (one per group of equal record settings)."""
    explained: int
    """Latents explained (one explanation set per group of equal explain settings)."""
    scoring_calls: int
    seconds: float
    variants_done: int = 0
    """Variants a resumed sweep has already scored: the other fields count only the work left."""
    variants_chosen: int | None = None
    """With `--only`: the chosen variants not yet done (the other fields count only theirs)."""

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def describe(self) -> str:
        told = [f"{self.variants_done} done"] if self.variants_done else []
        told += [f"{self.variants_chosen} chosen by --only"] if self.variants_chosen is not None else []
        left = f" ({'; '.join(told)}; what is left:" if told else ":"
        return (f"{self.variants} variant(s) × {self.latents} latents{left} {self.records_built} record set(s), "
                f"{self.explained} explanations, ~{self.scoring_calls:,} scoring calls; ≈ {self.hours:.1f} h at "
                f"the embedded models' measured rates on 2 cores, before response-cache hits" + (")" if told else ""))


def explanation_seconds(cfg: RunConfig) -> float:
    """Seconds per explanation of the model that explains (the explainer's own LLM, else the run's)."""
    model = cfg.explainer.llm_model or cfg.llm.model or "embedded"
    return SECONDS_PER_EXPLANATION.get(model, SECONDS_PER_EXPLANATION["embedded"])


def estimate(configs: list[RunConfig], done: list[set[str]] | None = None,
             chosen: list[bool] | None = None) -> Cost:
    """The cost of running every config, counting shared records and explanations once; `done` (per config, the
    stages a resumed sweep finished) leaves out the work already done, `chosen` (per config) the configs not run
    now."""
    done = done or [set() for _ in configs]
    run = [c for c, pick in zip(configs, chosen or [True] * len(configs)) if pick]
    done_of = {id(c): d for c, d in zip(configs, done)}
    latents = configs[0].latents * len(configs[0].coders)
    made = {stage: {key(c) for c, d in zip(configs, done) if stage in d}
            for stage, key in (("records", records_key), ("explain", explain_key))}
    explain_groups = {explain_key(c): c for c in run if explain_key(c) not in made["explain"]}
    explained = sum(latents * c.explainer.candidates for c in explain_groups.values())
    explain_seconds = sum(latents * c.explainer.candidates * explanation_seconds(c) for c in explain_groups.values())
    calls = {name: 0.0 for name in SECONDS_PER_CALL}
    for cfg in (c for c in run if "score" not in done_of[id(c)]):
        for name, per_latent in scoring_calls(cfg).items():
            calls[name] = calls.get(name, 0.0) + per_latent * latents
    seconds = explain_seconds + sum(n * SECONDS_PER_CALL.get(name, 1.5)
                                                         for name, n in calls.items())
    return Cost(variants=len(configs), latents=latents,
                records_built=len({records_key(c) for c in run} - made["records"]), explained=explained,
                scoring_calls=int(sum(calls.values())), seconds=seconds,
                variants_done=sum("score" in d for d in done),
                variants_chosen=None if chosen is None else sum("score" not in done_of[id(c)] for c in run))
