"""What every scorer is given and what it must do.

A scorer declares what it needs from the backend, plans one latent (the LLM requests it wants answered, and
its own bookkeeping), and turns the answers into per-latent metrics, per-example rows and outcomes for the
shared per-decile / per-source tables. The stage sends every scorer's requests for every latent through one
queue, so a server stays busy across scorers; scorers never call the LLM themselves, which keeps them
testable on fixed answers. Work that is not an LLM call (an embedding pass, steering the subject model) is
done in `plan` or `evaluate` with the in-process subject model from the context.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from lantern.errors import LanternError
from lantern.llm.base import Capabilities, Request, Response
from lantern.score.metrics import Outcome
from lantern.score.settings import ScorerConfig


@dataclass(frozen=True)
class Needs:
    """What a scorer cannot work without."""

    logprobs: bool = False
    """Top log-probabilities of the generated token."""
    prompt_logprobs: bool = False
    """Log-probabilities of the prompt's own tokens (echo)."""
    subject_model: bool = False
    """The subject model loaded in this process (hidden states, steering)."""


@dataclass
class ScoreContext:
    """What a scorer may read besides its own latent."""

    settings: ScorerConfig
    tokenizer: Any
    """The subject model's tokenizer (windows are token ids of the subject model)."""
    capabilities: Capabilities
    backend: str
    records: dict[str, dict[int, list[dict]]]
    """Every recorded latent's rows, per coder (the intruder scorer borrows other latents' windows)."""
    mark_threshold: float = 0.3
    seed: int = 0
    subject: Any = None
    """A loaded `SubjectModel`, present when some scorer needs it."""
    config: Any = None
    """The run's `RunConfig`, for scorers that need more of the run (the intervention scorer loads the coders
    from its coder specs and steers the subject model)."""
    explanations: dict[tuple[str, int], str] = field(default_factory=dict)
    """Every scored latent's explanation, by (coder, latent): the intervention scorer's shuffled baseline
    borrows another latent's. Filled from the tasks when left empty."""


@dataclass(frozen=True)
class LatentTask:
    """One latent to score: its explanation and its records rows of the scored split."""

    coder: str
    latent: int
    explanation: str
    rows: list[dict]


@dataclass
class Plan:
    """A scorer's requests for one latent, and whatever it needs to read their answers back."""

    task: LatentTask
    requests: list[Request]
    state: Any = None


@dataclass
class LatentResult:
    """What a scorer found for one latent."""

    metrics: dict
    """The per-latent row of scores.parquet (beside coder, latent, scorer and the token counts)."""
    examples: list[dict]
    """Per-example rows of examples.parquet (`example_row` gives the common columns)."""
    outcomes: list[Outcome]
    """For the per-decile and per-source tables."""
    usage: list[Response] = field(default_factory=list)
    """Work done outside the LLM queue (e.g. embedding passes), as calls with their token counts."""


class Scorer(ABC):
    name: str
    headline: str
    """The metric that stands for the scorer in the summary (a key of `LatentResult.metrics`)."""
    uses_explanation: bool = True
    """False for scorers that judge the latent's windows alone (intruder without an explanation): a shuffled
    explanation cannot change their score."""

    def __init__(self, settings: ScorerConfig | None = None):
        self.settings = settings or ScorerConfig()

    def needs(self) -> Needs:
        return Needs()

    def setup(self, context: ScoreContext) -> None:  # noqa: B027 - optional hook
        """Called once before planning (choose a mode, build an embedder, gather other latents' windows)."""
        self.context = context

    @abstractmethod
    def plan(self, task: LatentTask) -> Plan:
        """The requests for one latent (may be none)."""

    @abstractmethod
    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        """Metrics, example rows and outcomes from the answers to `plan.requests`, in order."""


def example_row(task: LatentTask, scorer: str, example: dict | None, responses: list[Response], **fields) -> dict:
    """The columns every per-example row has; `responses` are the calls behind this example (summed)."""
    failed = [r.error for r in responses if r.error]
    return {"coder": task.coder, "latent": task.latent, "scorer": scorer,
            "start": None if example is None else example["start"],
            "kind": None if example is None else example["kind"],
            "source": None if example is None else example["source"],
            "decile": None if example is None else example["decile"],
            "error": failed[0] if failed else None,
            "prompt_tokens": sum(r.prompt_tokens for r in responses),
            "completion_tokens": sum(r.completion_tokens for r in responses),
            "seconds": float(sum(r.seconds for r in responses)), "attempts": sum(r.attempts for r in responses),
            "cached": bool(responses) and all(r.cached for r in responses), **fields}


_HAVE = {
    "logprobs": "token log-probs",
    "prompt_logprobs": "prompt log-probs (the log-prob of every prompt token)",
}
_WHERE = {
    "logprobs": "the transformers (in-process) and vllm backends and completions servers have them",
    "prompt_logprobs": "use --llm-backend transformers (in-process) or vllm, or a completions server that echoes "
                       "the prompt (vLLM, llama.cpp) with --llm-prompt-logprobs",
}


def check_needs(scorers: list[Scorer], capabilities: Capabilities, backend: str) -> None:
    """Refuse, before any call, a scorer whose need the backend lacks, naming the need and where it is met."""
    for scorer in scorers:
        needs = scorer.needs()
        for need in ("logprobs", "prompt_logprobs"):
            if getattr(needs, need) and not getattr(capabilities, need):
                raise LanternError(f"the {scorer.name} scorer needs {_HAVE[need]}, which the {backend} backend "
                                   f"does not give here: {_WHERE[need]}")
