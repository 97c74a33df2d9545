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
    dropped_windows: int = 0
    """Windows left out so the prompt fits the LLM's context (`fit_to_context`); recorded with the explanation."""


CHAT_TASK = (
    "You name what a feature inside a language model responds to. A feature fires on some tokens of a text. "
    "You are shown passages in which the tokens where it fires most strongly are marked like <<this>>, and the "
    "marked tokens listed with how often each is marked. Reply with one short phrase, at most 12 words, that "
    "says what the marked tokens have in common. Be concrete: when the same word or symbol is marked again and "
    "again, name it in quotes; otherwise name the kind of word (e.g. plural nouns, verbs in the past tense), "
    "symbol, or context (e.g. the word after \"of\"). Write only the phrase itself: no label before it, no "
    "quotes of whole passages, no explanation."
)
CHAT_QUESTION = "What do the marked tokens have in common? Reply with one short phrase only."
MAX_PROMPT_CHARS = 20_000
"""About 6,000 tokens: an explain prompt must leave the embedded model's 8,192-token context room to answer."""


class Explainer(ABC):
    """Builds the requests for a latent and reads explanations out of the answers.

    `requests` returns one request per candidate; with several candidates they differ only in `seed` (and
    are sampled, not greedy), so each gets its own response-cache entry and its own answer. Every request
    carries two forms of the same task: `prompt`, a few-shot text that a base model continues, and `messages`,
    chat turns (the task as a system message, the latent's evidence last) for instruction-tuned models."""

    name: str
    needs_output_evidence: bool = False
    max_tokens: int | None = None
    """The explainer's own answer budget, when it needs more than `ExplainerConfig.max_tokens`."""
    stop: tuple[str, ...] = ("\n",)
    chat_task: str = CHAT_TASK
    chat_question: str = CHAT_QUESTION
    demonstrations: str = ""
    """The base prompt's worked examples: an answer that copies one of their explanations fails."""

    @abstractmethod
    def prompt(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        """The full prompt; everything before the latent's own evidence is the same for every latent, so a
        server's prefix cache serves it once."""

    @abstractmethod
    def parse_text(self, text: str) -> str | None:
        """The explanation in one answer, or None when there is none (a failure, never a guess)."""

    def evidence_text(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> str:
        """The latent's own evidence as the chat message shows it (passages, marked tokens, output tokens)."""
        from lantern.explain.format import marked_tokens_summary, passages

        return (passages(tokenizer, evidence.windows, cfg.mark_threshold)
                + f"Marked tokens: {marked_tokens_summary(tokenizer, evidence.windows, cfg.mark_threshold)}\n")

    def messages(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> tuple[tuple[str, str], ...]:
        """The chat form: the task as the system message (the same for every latent, so the KV cache keeps it),
        then the evidence and the question."""
        return (("system", self.chat_task),
                ("user", self.evidence_text(tokenizer, evidence, cfg) + "\n" + self.chat_question))

    def describe(self, evidence: LatentEvidence) -> dict:
        """What was shown beyond the prompt text, stored with the explanation (JSON)."""
        return {"windows": len(evidence.windows)}

    def requests(self, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig) -> list[Request]:
        prompt = self.prompt(tokenizer, evidence, cfg)
        messages = self.messages(tokenizer, evidence, cfg)
        max_tokens = max(cfg.max_tokens, self.max_tokens or 0)
        if cfg.candidates == 1:
            return [Request(prompt=prompt, max_tokens=max_tokens, temperature=cfg.temperature, stop=self.stop,
                            messages=messages)]
        temperature = cfg.temperature if cfg.temperature > 0 else cfg.candidate_temperature
        return [Request(prompt=prompt, max_tokens=max_tokens, temperature=temperature, stop=self.stop, seed=seed,
                        messages=messages)
                for seed in range(cfg.candidates)]

    def parse(self, responses: list[Response]) -> list[str | None]:
        """One explanation (or None) per candidate; a failed call, a copied worked example or a bare layout
        label gives None."""
        from lantern.explain.parsing import demonstration_answers, unless_echo

        copied = demonstration_answers(self.demonstrations)
        return [unless_echo(self.parse_text(r.text), copied) if r.ok else None for r in responses]


def fit_to_context(explainer: Explainer, tokenizer, evidence: LatentEvidence, cfg: ExplainerConfig,
                   max_chars: int = MAX_PROMPT_CHARS) -> LatentEvidence:
    """The evidence with its last windows (and negatives) dropped until both prompt forms fit `max_chars`: the
    instructions are never cut, the windows are, and how many were dropped is kept."""
    from dataclasses import replace

    def size(e: LatentEvidence) -> int:
        chat = sum(len(content) for _, content in explainer.messages(tokenizer, e, cfg))
        return max(len(explainer.prompt(tokenizer, e, cfg)), chat)

    fitted = evidence
    while size(fitted) > max_chars and (len(fitted.windows) > 1 or fitted.negatives):
        if fitted.negatives and len(fitted.negatives) >= len(fitted.windows) - 1:
            fitted = replace(fitted, negatives=fitted.negatives[:-1])
        else:
            fitted = replace(fitted, windows=fitted.windows[:-1], dropped_windows=fitted.dropped_windows + 1)
    return fitted
