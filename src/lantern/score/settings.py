"""Scorer settings: one typed dataclass, saved in the run's config.json beside the explainer's."""
from __future__ import annotations

from dataclasses import dataclass

SIMULATION_MODES = ("auto", "prompt-logprobs", "per-token")
MAX_EXAMPLES_PER_PROMPT = 20


@dataclass(frozen=True)
class ScorerConfig:
    simulation_mode: str = "auto"
    """`prompt-logprobs`: one call per window, the digits read from the echoed prompt's log-probs at each
    token's slot; `per-token`: one call per token position; `auto`: the first where the backend has prompt
    log-probs, else the second."""
    top_logprobs: int = 20
    """Alternatives asked for per read position (digits outside them are unseen; 20 is most servers' cap)."""
    surprisal_prefix: str = "A passage of text."
    """The generic explanation whose loss the real explanation is compared with."""
    embedder: str = "subject"
    """`subject` (mean-pooled hidden states of the subject model, in-process) or a sentence-transformers model
    name or path (needs the optional `sentence-transformers` package)."""
    embedding_layer: int | None = None
    """Decoder block whose output the subject embedder pools (None: the middle block, n_layers // 2)."""
    intruder_windows: int = 4
    """Activating windows of the scored latent per intruder trial (plus one intruder)."""
    intruder_trials: int = 0
    """Trials per latent (0: as many as its activating test windows allow, sliding along the deciles)."""
    intruder_explanation: bool = False
    """Show the explanation in intruder prompts. Off by default: intruder detection asks whether the latent's
    windows share something the LLM can see, which needs no explanation."""
    bootstrap_resamples: int = 1000
    """Resamples behind every confidence interval."""
    intervention_targets: tuple[float, ...] = (0.5, 1.0, 3.0)
    """Next-token KL divergences (nats) each latent's steering strength is calibrated to."""
    intervention_prompts: int = 8
    """Neutral prompts steered per latent (the first n of explain/output_evidence.NEUTRAL_PROMPTS)."""
    intervention_tokens: int = 16
    """Tokens generated per steered or clean continuation (greedy)."""
    examples_per_prompt: int = 1
    """Detection and fuzzing: texts shown per prompt. 1: one text and a one-token yes/no answer whose P(yes) comes
    from log-probs where the backend has them; more: numbered texts answered by one generated list of 0/1 verdicts
    (fewer calls, longer prompts, no probabilities; a short or malformed list fails the texts it lacks)."""

    def __post_init__(self):  # config.json stores the targets as a list
        object.__setattr__(self, "intervention_targets", tuple(float(t) for t in self.intervention_targets))

    def check(self) -> None:
        """Refuse settings that cannot score (called before any model is loaded)."""
        from lantern.errors import LanternError
        from lantern.explain.output_evidence import NEUTRAL_PROMPTS

        if self.simulation_mode not in SIMULATION_MODES:
            raise LanternError(f"unknown simulation_mode {self.simulation_mode!r}; use {', '.join(SIMULATION_MODES)}")
        if self.top_logprobs < 1:
            raise LanternError(f"top_logprobs must be at least 1, not {self.top_logprobs}")
        if not 1 <= self.intruder_windows <= 8:
            raise LanternError(f"intruder_windows must be 1..8 (answers are one digit), not {self.intruder_windows}")
        if not self.intervention_targets or any(t <= 0 for t in self.intervention_targets):
            raise LanternError(f"intervention_targets must be positive KL values, not {self.intervention_targets}")
        if not 1 <= self.intervention_prompts <= len(NEUTRAL_PROMPTS):
            raise LanternError(f"intervention_prompts must be 1..{len(NEUTRAL_PROMPTS)}, not {self.intervention_prompts}")
        if self.intervention_tokens < 1:
            raise LanternError(f"intervention_tokens must be at least 1, not {self.intervention_tokens}")
        if self.bootstrap_resamples < 10:
            raise LanternError(f"bootstrap_resamples must be at least 10, not {self.bootstrap_resamples}")
        if not 1 <= self.examples_per_prompt <= MAX_EXAMPLES_PER_PROMPT:
            raise LanternError(f"examples_per_prompt must be 1..{MAX_EXAMPLES_PER_PROMPT}, "
                               f"not {self.examples_per_prompt}")
