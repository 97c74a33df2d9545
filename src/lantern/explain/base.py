"""What every explainer is given and what it must do: build requests for one latent, read its answers back.

Explainers are pure prompt builders and parsers: the stage gathers the evidence (records, and the model's
output evidence where an explainer asks for it) and sends the requests, so an explainer can be tested on
fixed evidence and fixed answers.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from lantern.explain.settings import ExplainerConfig
from lantern.llm.base import Request, Response


@dataclass(frozen=True)
class Window:
    """One window of a latent's records: its tokens and the latent's activation on each."""

    tokens: list[int]
    activations: list[float]

    @classmethod
    def of(cls, row: dict) -> "Window":
        return cls(tokens=list(row["tokens"]), activations=[float(a) for a in row["activations"]])


@dataclass(frozen=True)
class TokenScore:
    """A readable token string and how strongly the latent promotes it."""

    token: str
    score: float


@dataclass(frozen=True)
class OutputEvidence:
    """What a latent writes, read from the subject model (see output_evidence.py for how)."""

    logit_lens: list[TokenScore]
    """Tokens its decoder direction points to through the final norm and the unembedding (logit units)."""
    steering: list[TokenScore]
    """Tokens whose mean next-token log-prob rises most when the direction is added (nats)."""
    site: str
    """Where the direction was added: the module path and side, e.g. `layers.6 (output)`."""
    steering_norm: float
    """Norm of the added vector."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LatentEvidence:
    """Everything an explainer may show about one latent."""

    coder: str
    latent: int
    windows: list[Window]
    """Activating windows of the explain split."""
    negatives: list[Window] = field(default_factory=list)
    """Explain-split windows where the latent is zero everywhere (only when records asked for them)."""
    latent_max: float = 0.0
    """The largest activation over the explain windows (activation values are shown relative to it)."""
    output: OutputEvidence | None = None


class Explainer(ABC):
    """Builds the requests for a latent and reads explanations out of the answers.

    `requests` returns one request per candidate; with several candidates they differ only in `seed` (and
    are sampled, not greedy), so each gets its own response-cache entry and its own answer."""

    name: str
    needs_output_evidence: bool = False
    max_tokens: int | None = None
    """The explainer's own answer budget, when it needs more than `ExplainerConfig.max_tokens`."""
    stop: tuple[str, ...] = ("\n",)

    @abstractmethod
    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        """The full prompt; everything before the latent's own evidence is the same for every latent, so a
        server's prefix cache serves it once."""

    @abstractmethod
    def parse_text(self, text: str) -> str | None:
        """The explanation in one answer, or None when there is none (a failure, never a guess)."""

    def describe(self, evidence: LatentEvidence) -> dict:
        """What was shown beyond the prompt text, stored with the explanation (JSON)."""
        return {"windows": len(evidence.windows)}

    def requests(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> list[Request]:
        prompt = self.prompt(tokenizer, evidence, cfg)
        max_tokens = max(cfg.max_tokens, self.max_tokens or 0)
        if cfg.candidates == 1:
            return [Request(prompt=prompt, max_tokens=max_tokens, temperature=cfg.temperature, stop=self.stop)]
        temperature = cfg.temperature if cfg.temperature > 0 else cfg.candidate_temperature
        return [Request(prompt=prompt, max_tokens=max_tokens, temperature=temperature, stop=self.stop, seed=seed)
                for seed in range(cfg.candidates)]

    def parse(self, responses: list[Response]) -> list[str | None]:
        """One explanation (or None) per candidate; a failed call gives None."""
        return [self.parse_text(r.text) if r.ok else None for r in responses]
